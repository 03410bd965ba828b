public import PortsweepEngine
public import UVLoop
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A sweep of a port range: for every port, listen here, connect through the target, exchange a line each way.
///
/// ```swift
/// let sweep = try Sweep(SweepConfiguration(ports: try PortSet(parsing: "8000-8100")), group: group)
/// for try await result in sweep.results() { print(result.port, result.outcome) }
/// ```
/// Results arrive in port order. Cancelling the iterating task (or dropping the iterator) stops the sweep and
/// closes every handle. A problem of this machine (descriptors exhausted) ends the sequence with `SweepError`.
public final class Sweep: Sendable {
    public let configuration: SweepConfiguration
    public let plan: SweepPlan
    private let group: EventLoopGroup
    private let ports: [UInt16]
    private let run = Mutex<RunState?>(nil)
    private let board: Mutex<ResultBoard?> = Mutex(nil)
    private let watchers = Mutex<[@Sendable ([PortResult]) -> Void]>([])
    /// `--rate`, one limit over every shard.
    private let rate: RateLimit?
    private let budget: DescriptorBudget

    private final class RunState: @unchecked Sendable {
        // Guarded by the owning Sweep's `run` mutex.
        var handles: [ShardHandle] = []
        var shardsLeft: Int
        var candidates: [Transport: [UInt16]] = [:]
        var failure: LocalFailure?
        var cancelled = false
        var inRetryPass = false
        var interrupted = false
        var retried = 0
        var progress: [ShardProgress] = []
        var summary: SweepSummary?
        /// A sweep through a checker runs as one task.
        var via: Task<Void, Never>?
        let started = ContinuousClock.now
        init(shards: Int) { shardsLeft = shards }
    }

    /// Validates the configuration and plans the sweep within `budget` (by default the descriptor limit as it
    /// is: raising it is the caller's decision, see `DescriptorBudget.raise()`).
    public init(_ configuration: SweepConfiguration, group: EventLoopGroup, budget: DescriptorBudget? = nil) throws(SweepError) {
        guard !configuration.ports.isEmpty else { throw .noPorts }
        let bind = configuration.bindAddress
        guard bind.family == configuration.target.family else {
            throw .familyMismatch(bind: bind, target: configuration.target)
        }
        if !configuration.direction.isOutbound { try Sweep.checkBindable(bind) }
        try Sweep.checkRoute(to: configuration.target)
        self.configuration = configuration
        self.group = group
        ports = configuration.ports.sorted
        rate = configuration.rate.map { RateLimit(perSecond: $0, within: configuration.sharedRate) } ?? configuration.sharedRate
        self.budget = budget ?? .current()
        let toTest = configuration.orderedTransports.map { configuration.portsToTest($0).count }.max() ?? 0
        let loops = min(group.loops.count, max(1, (toTest + 63) / 64))
        plan = SweepPlan(configuration: configuration, loops: loops, budget: budget ?? .current())
    }

    /// Ports with a verdict so far (for progress displays); any thread.
    /// `body` receives every verdict as it is decided, in batches, in any order, on the loop thread that decided
    /// it (a live view that must not wait behind a slow port, as the in-order results do). It must be quick and
    /// must not call back into the sweep. Call before `run()`.
    public func watch(_ body: @escaping @Sendable ([PortResult]) -> Void) {
        watchers.withLock { $0.append(body) }
    }

    public var completed: Int { board.withLock { $0?.completed ?? 0 } }

    /// The number of tests: ports times protocols.
    public var total: Int { ports.count * configuration.transports.count }

    /// When the sweep cannot end sooner: the latest deadline of a port waiting out its timeout (uv_hrtime ms,
    /// see `ShardProgress.now`), 0 when none waits. For an ETA that counts the ports a firewall drops.
    public var lastDeadline: UInt64 {
        run.withLock { $0?.progress.map(\.lastDeadline).max() ?? 0 }
    }

    /// The summary, once the results sequence has ended.
    public var summary: SweepSummary? { run.withLock { $0?.summary } }

    /// The sweep's results in port order. Iterating starts the sweep; a sweep runs once.
    public func results() -> SweepResults { SweepResults(sweep: self) }

    /// Runs the whole sweep and returns every result with the summary.
    public func run() async throws -> (results: [PortResult], summary: SweepSummary) {
        var all: [PortResult] = []
        all.reserveCapacity(ports.count)
        for try await result in results() { all.append(result) }
        guard let summary else { throw CancellationError() }
        return (all, summary)
    }

    // MARK: running

    /// A bind address must be one of this machine's: checked once, up front, not reported per port.
    private static func checkBindable(_ ip: IPAddress) throws(SweepError) {
        if !LocalChecks.isLocal(ip) { throw .bindAddressNotLocal(ip, errno: EADDRNOTAVAIL) }
    }

    /// A target this machine has no route to is a local problem, said once, not a FAIL (TCP) or a timeout (UDP)
    /// per port.
    private static func checkRoute(to ip: IPAddress) throws(SweepError) {
        if let errno = LocalChecks.routeError(to: ip) { throw .noRoute(ip, errno: errno) }
    }

    typealias Continuation = AsyncThrowingStream<[PortResult], any Error>.Continuation

    func start(continuation: Continuation) throws(SweepError) {
        let transports = configuration.orderedTransports
        let watchers = self.watchers.withLock { $0 }
        let board = ResultBoard(ports: ports, transports: transports,
                                observe: { batch in for watcher in watchers { watcher(batch) } }) { continuation.yield($0) }
        let work = transports.map { ($0, configuration.portsToTest($0)) }.filter { !$0.1.isEmpty }
        let state = RunState(shards: plan.loops * work.count)
        let alreadyStarted = run.withLock { current -> Bool in
            if current != nil { return true }
            current = state
            return false
        }
        if alreadyStarted { throw .alreadyStarted }
        self.board.withLock { $0 = board }
        // Verdicts of an earlier run first, in their places; nothing left to test ends the sweep at once.
        let known = configuration.knownInScope
        if !known.isEmpty { board.post(known) }
        if work.isEmpty { return complete(board: board, continuation: continuation) }
        if let checker = configuration.via { return startVia(checker, board: board, state: state, continuation: continuation) }

        // UDP first: its shared client socket is opened once per shard, before TCP ports take descriptors.
        for (transport, ports) in work.reversed() {
            let share = plan.shares[transport]!
            let settings = settings(for: transport, window: share.windowPerLoop, capacity: share.capacityPerLoop)
            for (loop, ports) in zip(group.loops, Shard.deal(ports, over: plan.loops)) {
                launch(transport, on: loop, ports: ports, settings: settings, board: board, continuation: continuation)
            }
        }
    }

    private func settings(for transport: Transport, window: Int, capacity: Int, retryPass: Bool = false) -> ShardSettings {
        var settings = ShardSettings(window: window, capacity: capacity, timeout: configuration.timeout,
                                     isRetryPass: retryPass,
                                     retransmitInterval: transport == .udp ? configuration.retransmitInterval : nil)
        settings.setsAsideUsed = !configuration.direction.isOutbound
        return settings
    }

    private func launch(_ transport: Transport, on loop: EventLoop, ports: [UInt16], settings: ShardSettings,
                        board: ResultBoard, continuation: Continuation) {
        let (bind, target, swept) = (configuration.bindAddress, configuration.target, configuration.ports)
        let (direction, rate) = (configuration.direction, self.rate)
        let progress = ShardProgress()
        run.withLock { $0?.progress.append(progress) }
        // The retry pass names who holds each port that stays USED (from /proc, read while they hold it).
        let holders = settings.isRetryPass ? HolderLookup(ports: ports) : nil
        let deliver: @Sendable ([PortResult]) -> Void
        if let holders {
            deliver = { board.post(holders.fill($0)) }
        } else {
            deliver = { board.post($0) }
        }
        loop.execute { [self] in
            let handle = Shard.start(
                transport, on: loop, ports: ports, settings: settings, bind: bind, target: target, swept: swept,
                direction: direction, progress: progress, rate: rate, deliver: deliver,
                done: { end in self.shardEnded(end, transport: transport, board: board, continuation: continuation) })
            let cancelled = run.withLock { state in
                state?.handles.append(handle)
                return state?.cancelled ?? false
            }
            if cancelled { handle.cancel() }
        }
    }

    /// Inbound through a checker: one task runs the windows; the board gets verdicts as the checker's records
    /// come; a checker that fails ends the sweep with what was decided and the ports left named.
    private func startVia(_ checker: Checker, board: ResultBoard, state: RunState, continuation: Continuation) {
        let via = ViaRun(configuration: configuration, checker: checker, group: group, board: board, budget: budget)
        let task = Task { [self] in
            do throws(ViaRun.Failure) {
                try await via.run()
                complete(board: board, continuation: continuation)
            } catch {
                let untested = untestedSpec(board)
                board.postRemaining()
                run.withLock { $0?.cancelled = true }
                switch error {
                case .checker(let what): continuation.finish(throwing: SweepError.checker(what, untested: untested))
                case .local(let failure): continuation.finish(throwing: SweepError.local(failure))
                }
            }
        }
        let cancelled = run.withLock { state -> Bool in
            state?.via = task
            return state?.cancelled ?? false
        }
        if cancelled { task.cancel() }
    }

    /// The tests without a verdict, as port specs per protocol (`TCP 30000-65535, UDP 30000-65535`).
    private func untestedSpec(_ board: ResultBoard) -> String {
        let missing = board.missing()
        return configuration.orderedTransports.compactMap { transport -> String? in
            let ports = missing.filter { $0.1 == transport }.map(\.0)
            return ports.isEmpty ? nil : "\(transport.rawValue) \(PortSet(ports))"
        }.joined(separator: ", ")
    }

    func cancel() {
        let (handles, via) = run.withLock { state -> ([ShardHandle], Task<Void, Never>?) in
            guard let state else { return ([], nil) }
            state.cancelled = true
            return (state.handles, state.via)
        }
        for handle in handles { handle.cancel() }
        via?.cancel()
    }

    /// Stops the sweep short (SIGINT, SIGTERM): no more ports start, those in flight are dropped, every result
    /// decided so far is still handed out (in port order, gaps where a port was left untested), and the summary
    /// says the sweep was interrupted and how many ports it left untested. Any thread; idempotent.
    public func interrupt() {
        let (handles, via) = run.withLock { state -> ([ShardHandle], Task<Void, Never>?) in
            guard let state, !state.cancelled else { return ([], nil) }
            state.cancelled = true
            state.interrupted = true
            return (state.handles, state.via)
        }
        for handle in handles { handle.cancel() }
        via?.cancel()
    }

    private func shardEnded(_ end: ShardEnd, transport: Transport, board: ResultBoard, continuation: Continuation) {
        let next: (retry: [Transport: [UInt16]], finish: Bool)? = run.withLock { state in
            guard let state else { return nil }
            if !end.retryCandidates.isEmpty { state.candidates[transport, default: []] += end.retryCandidates }
            if let failure = end.failure, state.failure == nil {
                state.failure = failure
                state.cancelled = true
                for handle in state.handles { handle.cancel() }
            }
            if end.cancelled { state.cancelled = true }
            state.shardsLeft -= 1
            guard state.shardsLeft == 0 else { return nil }
            if state.cancelled || state.inRetryPass || state.candidates.isEmpty { return ([:], true) }
            let retry = state.candidates.mapValues { $0.sorted() }
            state.candidates = [:]
            state.inRetryPass = true
            state.retried = retry.values.map(\.count).reduce(0, +)
            state.shardsLeft = retry.count
            return (retry, false)
        }
        guard let next else { return }
        if next.finish {
            complete(board: board, continuation: continuation)
            return
        }
        // The retry pass: one port at a time, with no other client socket of ours open, so a port still in use
        // now is held by someone else.
        for (transport, ports) in next.retry {
            launch(transport, on: group.loops[0], ports: ports,
                   settings: settings(for: transport, window: 1, capacity: 1, retryPass: true),
                   board: board, continuation: continuation)
        }
    }

    private func complete(board: ResultBoard, continuation: Continuation) {
        let interrupted = run.withLock { $0?.interrupted ?? false }
        // What was decided behind a port left untested is still a result: out, in order, gaps and all.
        if interrupted { board.postRemaining() }
        let failure: LocalFailure? = run.withLock { state in
            guard let state else { return nil }
            // A cancelled sweep has no summary: its counts would describe a part of the range. An interrupted one
            // has, and says it was.
            guard !state.cancelled || state.failure != nil || state.interrupted else { return nil }
            state.summary = SweepSummary(
                counts: board.counts, total: board.completed, elapsed: ContinuousClock.now - state.started,
                retried: state.retried, plan: plan, interrupted: state.interrupted,
                untested: total - board.completed)
            return state.failure
        }
        if let failure {
            continuation.finish(throwing: SweepError.local(failure))
        } else {
            continuation.finish()
        }
    }
}

/// The results of a sweep, in port order. Iterating starts the sweep.
public struct SweepResults: AsyncSequence, Sendable {
    public typealias Element = PortResult
    let sweep: Sweep

    public struct AsyncIterator: AsyncIteratorProtocol {
        var batches: AsyncThrowingStream<[PortResult], any Error>.AsyncIterator
        var batch: [PortResult] = []
        var index = 0
        let startError: SweepError?
        let sweep: Sweep

        public mutating func next() async throws -> PortResult? {
            if let startError { throw startError }
            // The stream hands out what it buffered even to a cancelled task: stop here instead.
            if Task.isCancelled {
                sweep.cancel()
                return nil
            }
            while index == batch.count {
                guard let next = try await batches.next() else { return nil }
                batch = next
                index = 0
            }
            defer { index += 1 }
            return batch[index]
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        let (stream, continuation) = AsyncThrowingStream<[PortResult], any Error>.makeStream()
        let sweep = self.sweep
        continuation.onTermination = { termination in
            if case .cancelled = termination { sweep.cancel() }
        }
        do {
            try sweep.start(continuation: continuation)
            return AsyncIterator(batches: stream.makeAsyncIterator(), startError: nil, sweep: sweep)
        } catch {
            return AsyncIterator(batches: stream.makeAsyncIterator(), startError: error, sweep: sweep)
        }
    }
}

/// Who holds the ports of a retry pass: one /proc snapshot for all of them, read before the pass tests them, and a
/// fresh look for a port the snapshot does not explain (taken in the meantime).
final class HolderLookup: @unchecked Sendable {  // used on one loop only (the retry pass runs on loop 0)
    private var snapshot: PortHolders?
    private let ports: Set<UInt16>

    init(ports: [UInt16]) { self.ports = Set(ports) }

    func fill(_ results: [PortResult]) -> [PortResult] {
        guard results.contains(where: { $0.outcome == .used }) else { return results }
        if snapshot == nil { snapshot = PortHolders.snapshot(ports: ports) }
        return results.map { result in
            guard result.outcome == .used else { return result }
            var filled = result
            filled.holder = snapshot?.holder(of: result.port, transport: result.transport)
                ?? PortHolders.snapshot(ports: [result.port]).holder(of: result.port, transport: result.transport)
            return filled
        }
    }
}
