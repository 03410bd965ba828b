import Foundation
import PortsweepEngine
import PortsweepListen
import Synchronization
import UVLoop

/// Listeners spread over worker processes, for ranges one process's descriptor limit cannot hold (65535 TCP and
/// UDP ports need 131,070 sockets; RLIMIT_NOFILE may be 20,000 even for root). Each worker is `portsweep listen
/// --worker` on a share of the ports, with loops of its own; it reports its start-up and then every event as
/// JSON Lines on its stdout, which this process merges into one log and one set of statistics.
final class ListenWorkers: Sendable {
    /// Worker process ids. Spawned with posix_spawn, not Foundation's Process: that one opens a pair of UDP
    /// sockets on 127.0.0.1 for its run loop, and they would take two UDP ports away from the workers.
    private let processes: [pid_t]
    let events: AsyncStream<ListenEvent>
    private let continuation: AsyncStream<ListenEvent>.Continuation
    private let startup = Mutex<(ready: Int, failures: [ListenFailure], ended: Int)>((0, [], 0))
    private let started = DispatchSemaphore(value: 0)

    /// Ports each worker takes, from the descriptors one process has: a quarter stays free for connections.
    static func portsPerWorker(budget: DescriptorBudget, transports: Int) -> Int {
        max(1, budget.available * 3 / 4 / max(1, transports))
    }

    init(ports: PortSet, portsPerWorker: Int, workerArguments: [String]) throws {
        (events, continuation) = AsyncStream<ListenEvent>.makeStream(bufferingPolicy: .unbounded)
        let sorted = ports.sorted
        var processes: [pid_t] = []
        var outputs: [Int32] = []
        for start in stride(from: 0, to: sorted.count, by: portsPerWorker) {
            let share = PortSet(sorted[start..<min(sorted.count, start + portsPerWorker)])
            let (pid, output) = try ListenWorkers.spawn(
                [ListenWorkers.executable, "listen", "--worker", "--ports", share.description] + workerArguments)
            processes.append(pid)
            outputs.append(output)
        }
        self.processes = processes
        for output in outputs {
            Thread.detachNewThread { [self] in read(output) }
        }
    }

    /// This executable (workers are the same binary).
    static var executable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    var count: Int { processes.count }

    /// Waits until every worker reported its start; returns the ports that failed (then stop the workers).
    func waitForStart() -> [ListenFailure] {
        for _ in processes { started.wait() }
        return startup.withLock { $0.failures }.sorted { ($0.transport, $0.port) < ($1.transport, $1.port) }
    }

    /// Asks every worker to close its listeners and exit; the events sequence ends when all have.
    func stop() {
        for pid in processes { kill(pid, SIGTERM) }
    }

    struct SpawnError: Error, CustomStringConvertible {
        let errno: Int32
        var description: String { "cannot start a worker process: \(String(cString: strerror(errno)))" }
    }

    /// Starts `arguments` with stdout into a pipe and stdin from a lifeline pipe whose write end this process
    /// keeps (and never writes to) until it exits: the worker's end of file on stdin means this process is gone,
    /// however it ended. Returns the pid and the stdout pipe's read end.
    private static func spawn(_ arguments: [String]) throws -> (pid_t, Int32) {
        var output: [Int32] = [0, 0], lifeline: [Int32] = [0, 0]
        guard pipe(&output) == 0 else { throw SpawnError(errno: errno) }
        guard pipe(&lifeline) == 0 else {
            let error = errno
            close(output[0]); close(output[1])
            throw SpawnError(errno: error)
        }
        // Not inherited by later workers (dup2 gives the child its own stdin and stdout without the flag): a
        // lifeline end held by a sibling would hide the parent's death.
        for fd in output + lifeline { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, output[1], STDOUT_FILENO)
        posix_spawn_file_actions_adddup2(&actions, lifeline[0], STDIN_FILENO)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for arg in argv { free(arg) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ)
        close(output[1])
        close(lifeline[0])
        guard rc == 0 else {
            close(output[0])
            close(lifeline[1])
            throw SpawnError(errno: rc)
        }
        // lifeline[1] stays open for the rest of this process's life, on purpose.
        return (pid, output[0])
    }

    /// In a worker: turns end of file on stdin (the parent is gone) into a SIGTERM to itself, which stops it the
    /// ordinary way (listeners closed, events flushed).
    static func stopAtEndOfInput() {
        Thread.detachNewThread {
            var byte: UInt8 = 0
            while true {
                let n = Glibc.read(STDIN_FILENO, &byte, 1)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
            }
            kill(getpid(), SIGTERM)
        }
    }

    private func read(_ fd: Int32) {
        var pending = Data()
        var reported = false
        let decoder = JSONDecoder()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = Glibc.read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            pending.append(contentsOf: chunk[0..<n])
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = pending[pending.startIndex..<newline]
                pending = Data(pending[(newline + 1)...])
                guard let record = try? decoder.decode(LogRecord.self, from: line) else { continue }
                switch record.event {
                case "ready":
                    startup.withLock { $0.ready += 1 }
                    if !reported { reported = true; started.signal() }
                case "failed":
                    let failure = ListenFailure(port: record.port ?? 0, transport: record.protocol == "UDP" ? .udp : .tcp,
                                                errno: Int32(record.requests ?? 0))
                    startup.withLock { $0.failures.append(failure) }
                case "failed-end", "too-many":
                    if !reported { reported = true; started.signal() }
                default:
                    if let event = record.listenEvent { continuation.yield(event) }
                }
            }
        }
        close(fd)
        if !reported { started.signal() }
        let last = startup.withLock { state -> Bool in
            state.ended += 1
            return state.ended == processes.count
        }
        if last {
            for pid in processes {
                var status: Int32 = 0
                waitpid(pid, &status, 0)
            }
            continuation.finish()
        }
    }
}

extension LogRecord {
    /// The event a worker's JSON line stands for.
    var listenEvent: ListenEvent? {
        let client = self.client.flatMap(SocketAddress.init(parsing:))
        switch event {
        case "connection":
            return .connection(ConnectionRecord(
                localPort: port ?? 0, client: client, bytesIn: bytesIn ?? 0, bytesOut: bytesOut ?? 0,
                requests: requests ?? 0, duration: .milliseconds(Int64((duration ?? 0) * 1000)), end: end ?? ""))
        case "datagram":
            return .datagram(DatagramRecord(localPort: port ?? 0, client: client, bytesIn: bytesIn ?? 0, bytesOut: bytesOut ?? 0))
        case "rejected":
            return .rejected(port: port ?? 0, client: client, reason: message ?? "")
        default:
            return nil
        }
    }
}

