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
    private let processes: [Process]
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
        var processes: [Process] = []
        var outputs: [FileHandle] = []
        for start in stride(from: 0, to: sorted.count, by: portsPerWorker) {
            let share = PortSet(sorted[start..<min(sorted.count, start + portsPerWorker)])
            let process = Process()
            process.executableURL = URL(fileURLWithPath: ListenWorkers.executable)
            process.arguments = ["listen", "--worker", "--ports", share.description] + workerArguments
            let out = Pipe()
            process.standardOutput = out
            process.standardInput = FileHandle.nullDevice
            try process.run()
            processes.append(process)
            outputs.append(out.fileHandleForReading)
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
        for process in processes where process.isRunning { kill(process.processIdentifier, SIGTERM) }
    }

    private func read(_ handle: FileHandle) {
        var pending = Data()
        var reported = false
        let decoder = JSONDecoder()
        while true {
            let data = handle.availableData
            if data.isEmpty { break }
            pending += data
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
        if !reported { started.signal() }
        let last = startup.withLock { state -> Bool in
            state.ended += 1
            return state.ended == processes.count
        }
        if last { continuation.finish() }
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

extension SocketAddress {
    /// Parses `1.2.3.4:80` or `[::1]:80`.
    init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]),
              let ip = IPAddress(String(text[..<colon])) else { return nil }
        self.init(ip, port: port)
    }
}
