import Foundation
public import PortsweepEngine
import PortsweepHTTP
import Synchronization
public import UVLoop

/// The messages on a worker's pipes: one JSON object per line. Parent to worker, on its stdin: the assignment
/// (then nothing: the pipe stays open as the worker's lifeline, and its end of file means the parent is gone,
/// however it ended). Worker to parent, on its stdout: start-up, events, counters.
struct WorkerAssignment: Codable {
    var configuration: ListenConfiguration
    /// The UDP ports of the whole listen (datagrams from them are never answered).
    var ownUDPPorts: PortSet
    /// The worker's slot in the shared connection budget.
    var slot: Int
}

/// Parent to worker, after the assignment: the whole listen's roster, once every worker has tried its ports
/// (and again after a replacement).
struct WorkerUpdate: Codable {
    var roster: ListenerRoster
}

struct WorkerReport: Codable {
    struct Rejected: Codable {
        var port: UInt16
        var client: SocketAddress?
        var reason: String
        var time: Double
    }

    var ready: [ListenFailure]?
    var connection: ConnectionRecord?
    var datagram: DatagramRecord?
    var rejected: Rejected?
    var counters: ListenCounters?

    init(ready: [ListenFailure]? = nil, counters: ListenCounters? = nil) {
        self.ready = ready
        self.counters = counters
    }

    init(_ event: ListenEvent) {
        switch event {
        case .connection(let record): connection = record
        case .datagram(let record): datagram = record
        case .rejected(let port, let client, let reason, let time):
            rejected = Rejected(port: port, client: client, reason: reason, time: time)
        case .note: break
        }
    }

    var event: ListenEvent? {
        if let connection { return .connection(connection) }
        if let datagram { return .datagram(datagram) }
        if let rejected { return .rejected(port: rejected.port, client: rejected.client, reason: rejected.reason, time: rejected.time) }
        return nil
    }
}

/// Connection counters in memory shared by the parent and its workers (a file on /dev/shm, unlinked at once,
/// mapped by each; the workers get the descriptor as fd 3): slot 0 counts the whole listen's connections,
/// slot 1+i worker i's, so the parent can hand back the slots of a worker that died holding them.
final class SharedSlots: @unchecked Sendable {  // atomics only
    let descriptor: Int32
    let count: Int
    private let base: UnsafeMutablePointer<Atomic<Int>>

    /// Creates the shared memory for `count` slots.
    convenience init(count: Int) throws(UVError) {
        var fd: Int32 = -1
        for directory in ["/dev/shm", NSTemporaryDirectory()] {
            var template = Array("\(directory)/portsweep-slots-XXXXXX".utf8CString)
            fd = mkstemp(&template)
            if fd >= 0 {
                unlink(template)
                break
            }
        }
        guard fd >= 0 else { throw UVError(-errno) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)  // inherited only where it is passed on as fd 3
        let size = max(4096, count * MemoryLayout<Atomic<Int>>.stride)
        guard ftruncate(fd, off_t(size)) == 0 else {
            let error = UVError(-errno)
            Glibc.close(fd)
            throw error
        }
        try self.init(mapping: fd, count: count)
    }

    /// Maps slots another process created (`fd` inherited).
    init(mapping fd: Int32, count: Int) throws(UVError) {
        let size = max(4096, count * MemoryLayout<Atomic<Int>>.stride)
        guard let memory = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), memory != MAP_FAILED else {
            throw UVError(-errno)
        }
        descriptor = fd
        self.count = count
        base = memory.bindMemory(to: Atomic<Int>.self, capacity: count)  // zero-filled: every slot is 0
    }

    func slot(_ index: Int) -> UnsafeMutablePointer<Atomic<Int>> { base + index }

    /// A worker in `index` died: its connections are gone, and so are their slots in the total.
    func reclaim(_ index: Int) {
        let held = slot(index).pointee.exchange(0, ordering: .acquiringAndReleasing)
        slot(0).pointee.wrappingSubtract(held, ordering: .acquiringAndReleasing)
    }

    static let workerDescriptor: Int32 = 3
}

/// A listen spread over worker processes, for ranges one process's descriptor limit cannot hold (65535 TCP and
/// UDP ports need 131,070 sockets; RLIMIT_NOFILE may be 20,000 even for root). Each worker is this program's
/// `listen --worker`, started with `uv_spawn` on the parent's loop; a worker that dies is reported at once and
/// replaced on the same ports, and its counts stay in the statistics.
public final class ListenWorkers: Sendable {
    /// This executable (workers are the same binary).
    public static var executable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// Ports one process takes, from its descriptors: a quarter stays free for connections.
    public static func portsPerProcess(descriptors: DescriptorBudget, transports: Int) -> Int {
        max(1, descriptors.available * 3 / 4 / max(1, transports))
    }

    private let pool: LoopBox<WorkerPool>

    init(_ configuration: ListenConfiguration, portsPerWorker: Int, loop: EventLoop, executable: String,
         continuation: AsyncStream<ListenEvent>.Continuation) {
        let sorted = configuration.ports.sorted
        var shares: [PortSet] = []
        for start in stride(from: 0, to: sorted.count, by: portsPerWorker) {
            shares.append(PortSet(sorted[start..<min(sorted.count, start + portsPerWorker)]))
        }
        pool = LoopBox(WorkerPool(configuration, shares: shares, loop: loop, executable: executable,
                                  continuation: continuation), loop: loop)
    }

    func start() async throws(ListenError) -> ListenStart {
        let pool = self.pool
        let result: Result<ListenStart, ListenError> = await withCheckedContinuation { done in
            pool.loop.execute { pool.value.start { done.resume(returning: $0) } }
        }
        return try result.get()
    }

    func counters() async -> ListenCounters {
        let pool = self.pool
        return await pool.loop.run { pool.value.counters }
    }

    func stop() async {
        let pool = self.pool
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            pool.loop.execute { pool.value.stop { done.resume() } }
        }
    }
}

/// The workers, on the parent's loop. Loop thread only.
final class WorkerPool {
    final class Worker: ByteStreamDelegate {
        unowned let pool: WorkerPool
        let slot: Int
        let ports: PortSet
        var process: ChildProcess?
        var buffer: [UInt8] = []
        var ready = false
        var outputEnded = false
        var termination: Termination?
        var counters = ListenCounters()
        /// Counts of earlier processes in this slot.
        var retired = ListenCounters()
        var deaths: [UInt64] = []
        var givenUp = false

        init(pool: WorkerPool, slot: Int, ports: PortSet) {
            self.pool = pool
            self.slot = slot
            self.ports = ports
        }

        var label: String { "worker \(slot) (\(pool.protocols) ports \(ports))" }

        func received(_ bytes: UnsafeRawBufferPointer, on stream: ByteStream) {
            buffer += bytes
            var start = 0
            while let newline = buffer[start...].firstIndex(of: 0x0A) {
                pool.report(buffer[start..<newline], from: self)
                start = newline + 1
            }
            buffer.removeFirst(start)
        }

        func ended(_ stream: ByteStream, error: UVError?) {
            outputEnded = true
            stream.close()
            pool.maybeEnded(self)
        }

        func wrote(_ bytes: Int, on stream: ByteStream, error: UVError?) {}
        func closed(_ stream: ByteStream) {}
    }

    let loop: EventLoop
    private let configuration: ListenConfiguration
    private let executable: String
    private let continuation: AsyncStream<ListenEvent>.Continuation
    private var workers: [Worker] = []
    private var slots: SharedSlots?
    private let decoder = JSONDecoder()
    private let encoder = JSONEncoder()
    private var starting: ((Result<ListenStart, ListenError>) -> Void)?
    /// Why the start failed, reported once every worker already started has ended again.
    private var startFailure: ListenError?
    private var failures: [ListenFailure] = []
    private var stopping = false
    private var stopped: (() -> Void)?
    private var replaced = 0

    init(_ configuration: ListenConfiguration, shares: [PortSet], loop: EventLoop, executable: String,
         continuation: AsyncStream<ListenEvent>.Continuation) {
        self.loop = loop
        self.configuration = configuration
        self.executable = executable
        self.continuation = continuation
        workers = []
        for (index, share) in shares.enumerated() { workers.append(Worker(pool: self, slot: index + 1, ports: share)) }
    }

    var protocols: String { configuration.transports.sorted().map(\.rawValue).joined(separator: " and ") }

    func start(_ done: @escaping (Result<ListenStart, ListenError>) -> Void) {
        do {
            slots = try SharedSlots(count: workers.count + 1)
        } catch {
            return done(.failure(.workers("shared memory: \(error.name)")))
        }
        starting = done
        for worker in workers {
            if let error = spawn(worker) {
                return abandonStart(.workers(error.description))
            }
        }
    }

    private func spawn(_ worker: Worker) -> UVError? {
        guard let slots else { return .badHandle }
        let process: ChildProcess
        do {
            process = try ChildProcess([executable, "listen", "--worker"], on: loop, inherited: [slots.descriptor])
        } catch {
            return error
        }
        worker.process = process
        worker.buffer = []
        worker.ready = false
        worker.outputEnded = false
        worker.termination = nil
        process.onExit = { [unowned self, unowned worker] how in
            worker.termination = how
            maybeEnded(worker)
        }
        process.stdout?.delegate = worker
        process.stdout?.startReading()
        var share = configuration
        share.ports = worker.ports
        let assignment = WorkerAssignment(configuration: share, ownUDPPorts: configuration.ownUDPPorts, slot: worker.slot)
        let line = ((try? encoder.encode(assignment)) ?? Data()) + Data([0x0A])
        _ = line.withUnsafeBytes { process.stdin?.write($0) }
        // stdin stays open, unwritten: the lifeline.
        return nil
    }

    func report(_ line: ArraySlice<UInt8>, from worker: Worker) {
        guard let report = try? decoder.decode(WorkerReport.self, from: Data(line)) else { return }
        if let event = report.event { continuation.yield(event) }
        if let counters = report.counters { worker.counters = counters }
        if let failed = report.ready {
            worker.ready = true
            ready(worker, failed: failed)
        }
    }

    private func ready(_ worker: Worker, failed: [ListenFailure]) {
        if let starting {
            failures += failed
            guard workers.allSatisfy(\.ready) else { return }
            self.starting = nil
            failures.sort { ($0.transport, $0.port) < ($1.transport, $1.port) }
            publishRoster()
            starting(.success(ListenStart(held: configuration.socketsNeeded - failures.count, failures: failures,
                                          workers: workers.count)))
            return
        }
        // A replacement: its ports' failures are those of its new start.
        failures = failures.filter { !worker.ports.contains($0.port) } + failed
        failures.sort { ($0.transport, $0.port) < ($1.transport, $1.port) }
        publishRoster()
        var text = "\(worker.label) listening again"
        if !failed.isEmpty {
            text += "; \(failed.count) of its ports could not be held again: "
                + failed.prefix(5).map { "\($0.transport.rawValue) \($0.port) \($0.reason)" }.joined(separator: ", ")
        }
        continuation.yield(.note(text, time: WallClock.now))
    }

    /// Tells every running worker the whole listen's roster (each echo connection asks its own process).
    private func publishRoster() {
        let update = WorkerUpdate(roster: ListenerRoster(configuration, failures: failures))
        guard let data = try? encoder.encode(update) else { return }
        let line = data + Data([0x0A])
        for worker in workers where worker.ready {
            _ = line.withUnsafeBytes { worker.process?.stdin?.write($0) }
        }
    }

    /// A worker is over once it exited and its output ended (its last events are read before it counts as gone).
    func maybeEnded(_ worker: Worker) {
        guard worker.outputEnded, let how = worker.termination, worker.process != nil else { return }
        worker.process?.stdin?.close()
        worker.process = nil
        slots?.reclaim(worker.slot)
        worker.retired = worker.retired + worker.counters
        worker.counters = ListenCounters()
        if stopping {
            finishStopIfDone()
            return
        }
        if starting != nil && !worker.ready {
            // Dead before it ever reported: a start-up failure of the worker itself.
            return abandonStart(.workers("\(worker.label) \(how) during start-up"))
        }
        restart(worker, after: how)
    }

    /// Replaces a worker that ended on its own, unless it keeps ending (5 times within 30 s).
    private func restart(_ worker: Worker, after how: Termination) {
        let now = loop.now
        worker.deaths = worker.deaths.filter { now &- $0 < 30_000 } + [now]
        guard worker.deaths.count < 5 else {
            worker.givenUp = true
            continuation.yield(.note("\(worker.label) \(how) again (5 times within 30 s); its ports are not served any more",
                                     time: WallClock.now))
            return
        }
        continuation.yield(.note("\(worker.label) \(how); a new worker takes over its ports", time: WallClock.now))
        replaced += 1
        if let error = spawn(worker) {
            worker.givenUp = true
            continuation.yield(.note("\(worker.label) cannot be replaced: \(error)", time: WallClock.now))
        }
    }

    /// Stops the workers already started and reports `error` once they are all gone: nothing of this pool runs
    /// after its start failed.
    private func abandonStart(_ error: ListenError) {
        guard let done = starting else { return }
        starting = nil
        startFailure = error
        stop { done(.failure(error)) }
    }

    var counters: ListenCounters {
        var sum = ListenCounters()
        for worker in workers { sum = sum + worker.retired + worker.counters }
        sum.workersReplaced += replaced
        return sum
    }

    func stop(_ done: @escaping () -> Void) {
        if stopping, let earlier = stopped {
            stopped = { earlier(); done() }
            return finishStopIfDone()
        }
        if stopping { return done() }
        stopping = true
        stopped = done
        for worker in workers { worker.process?.kill(SIGTERM) }
        finishStopIfDone()
    }

    private func finishStopIfDone() {
        guard stopping, workers.allSatisfy({ $0.process == nil }), let stopped else { return }
        self.stopped = nil
        stopped()
    }
}

/// The worker's side: `portsweep listen --worker`. Reads its assignment from stdin, holds its ports, and
/// reports start-up, every event and its counters (once a second and at the end) on stdout until SIGTERM or
/// the end of stdin.
public enum ListenWorker {
    /// Runs the worker until `stopRequested` returns or the parent is gone; returns the exit status.
    public static func run(group: EventLoopGroup, stopRequested: @escaping @Sendable () async -> Void) async -> Int32 {
        let loop = group.loops[0]
        let channel = await loop.run { LoopBox(ParentChannel(loop: loop), loop: loop) }
        guard let assignment = await channel.assignment(),
              let slots = try? SharedSlots(mapping: SharedSlots.workerDescriptor, count: assignment.slot + 1) else {
            return 2
        }
        let configuration = assignment.configuration
        let budget = ConnectionBudget(limit: configuration.limits.connections.maxConnections, total: slots.slot(0),
                                      mine: slots.slot(assignment.slot))
        let (events, continuation) = AsyncStream<ListenEvent>.makeStream(bufferingPolicy: .unbounded)
        let roster = RosterBoard()
        await loop.run { channel.value.roster = roster }
        let listener = LocalListener(configuration, group: group, budget: budget, continuation: continuation,
                                     ownUDPPorts: assignment.ownUDPPorts, roster: roster)
        let failures = await listener.start()
        await channel.send(WorkerReport(ready: failures))
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                for await event in events { await channel.send(WorkerReport(event)) }
            }
            tasks.addTask {
                while !Task.isCancelled {
                    try? await loop.sleep(for: .seconds(1))
                    await channel.send(WorkerReport(counters: await listener.counters()))
                }
            }
            // Whichever comes first: the parent's SIGTERM, or the parent gone (end of stdin).
            await withTaskGroup(of: Void.self) { stop in
                stop.addTask { await stopRequested() }
                stop.addTask { await channel.parentGone() }
                await stop.next()
                stop.cancelAll()
            }
            await listener.stop()
            continuation.finish()
            _ = await tasks.next()  // the events, all forwarded
            tasks.cancelAll()
        }
        await channel.send(WorkerReport(counters: await listener.counters()))
        await channel.flush()
        await loop.run { channel.value.close() }
        return 0
    }
}

/// The worker's pipes to its parent, on loop 0: stdin (the assignment, then the whole listen's roster when it
/// changes; the pipe is the lifeline) and stdout.
final class ParentChannel: ByteStreamDelegate {
    /// Where the roster updates go.
    var roster: RosterBoard?
    private let input: ByteStream?
    private let output: ByteStream?
    private var buffer: [UInt8] = []
    private var assignmentWaiter: CheckedContinuation<WorkerAssignment?, Never>?
    private var assignment: WorkerAssignment??
    private var goneWaiters: [CheckedContinuation<Void, Never>] = []
    private var gone = false
    private var flushWaiters: [CheckedContinuation<Void, Never>] = []
    private let encoder = JSONEncoder()

    init(loop: EventLoop) {
        input = try? ByteStream.open(pipe: STDIN_FILENO, on: loop)
        output = try? ByteStream.open(pipe: STDOUT_FILENO, on: loop)
        input?.delegate = self
        output?.delegate = self
        input?.startReading()
        if input == nil { gone = true }
    }

    func received(_ bytes: UnsafeRawBufferPointer, on stream: ByteStream) {
        buffer += bytes
        while let newline = buffer.firstIndex(of: 0x0A) {
            let line = Data(buffer[..<newline])
            buffer.removeFirst(newline + 1)
            if assignment == nil {
                let decoded = try? JSONDecoder().decode(WorkerAssignment.self, from: line)
                assignment = .some(decoded)
                assignmentWaiter?.resume(returning: decoded)
                assignmentWaiter = nil
            } else if let update = try? JSONDecoder().decode(WorkerUpdate.self, from: line) {
                roster?.publish(update.roster)
            }
        }
    }

    func ended(_ stream: ByteStream, error: UVError?) {
        gone = true
        if assignment == nil {
            assignment = .some(nil)
            assignmentWaiter?.resume(returning: nil)
            assignmentWaiter = nil
        }
        for waiter in goneWaiters { waiter.resume() }
        goneWaiters = []
    }

    func wrote(_ bytes: Int, on stream: ByteStream, error: UVError?) {
        guard !(output?.isWriting ?? false) else { return }
        for waiter in flushWaiters { waiter.resume() }
        flushWaiters = []
    }

    func closed(_ stream: ByteStream) {}

    fileprivate func waitAssignment(_ continuation: CheckedContinuation<WorkerAssignment?, Never>) {
        if let assignment { return continuation.resume(returning: assignment) }
        assignmentWaiter = continuation
    }

    fileprivate func waitGone(_ continuation: CheckedContinuation<Void, Never>) {
        if gone { return continuation.resume() }
        goneWaiters.append(continuation)
    }

    func close() {
        input?.close()
        output?.close()
    }

    fileprivate func releaseGoneWaiters() {
        for waiter in goneWaiters { waiter.resume() }
        goneWaiters = []
    }

    fileprivate func waitFlushed(_ continuation: CheckedContinuation<Void, Never>) {
        if !(output?.isWriting ?? false) { return continuation.resume() }
        flushWaiters.append(continuation)
    }

    fileprivate func write(_ report: WorkerReport) {
        guard let data = try? encoder.encode(report) else { return }
        _ = (data + Data([0x0A])).withUnsafeBytes { output?.write($0) }
    }
}

extension LoopBox where Value == ParentChannel {
    func assignment() async -> WorkerAssignment? {
        await withCheckedContinuation { continuation in loop.execute { self.value.waitAssignment(continuation) } }
    }

    func parentGone() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in loop.execute { self.value.waitGone(continuation) } }
        } onCancel: {
            // The other stop reason won: let this wait go.
            loop.execute { self.value.releaseGoneWaiters() }
        }
    }

    func send(_ report: WorkerReport) async {
        await loop.run { self.value.write(report) }
    }

    func flush() async {
        await withCheckedContinuation { continuation in loop.execute { self.value.waitFlushed(continuation) } }
    }
}
