public import PortsweepEngine
import PortsweepHTTP
public import UVLoop
import Synchronization

/// What to listen on and how to answer.
public struct ListenConfiguration: Sendable, Codable, Equatable {
    public var ports: PortSet
    public var bind: IPAddress
    public var transports: Set<Transport>
    public var reply: ReplyMode
    public var limits: ListenLimits

    public init(ports: PortSet, bind: IPAddress = .anyV4, transports: Set<Transport> = [.tcp, .udp],
                reply: ReplyMode = .http, limits: ListenLimits = ListenLimits()) {
        self.ports = ports
        self.bind = bind
        self.transports = transports
        self.reply = reply
        self.limits = limits
    }

    /// Sockets the listen needs: one per port and protocol.
    public var socketsNeeded: Int { ports.count * transports.count }

    /// The UDP ports of the listen: datagrams from them (on this host) are never answered.
    var ownUDPPorts: PortSet { transports.contains(.udp) ? ports : PortSet() }
}

/// Why listening could not start; nothing is left open.
public enum ListenError: Error, Sendable, CustomStringConvertible {
    /// A worker process could not be started.
    case workers(String)
    /// One process holds too few sockets for the range to be spread over a sane number of workers.
    case tooFewDescriptors(needed: Int, perProcess: Int)

    public var description: String {
        switch self {
        case .workers(let reason): return "cannot start the worker processes: \(reason)"
        case .tooFewDescriptors(let needed, let perProcess):
            return "\(needed) sockets are needed, and the descriptor limit leaves room for \(perProcess) per process"
        }
    }

    /// Out of descriptors (the fix is RLIMIT_NOFILE).
    public var isDescriptorShortage: Bool {
        switch self {
        case .tooFewDescriptors: return true
        case .workers(let reason): return reason.contains("EMFILE") || reason.contains("ENFILE")
        }
    }
}

/// How the start went: every port that could be held is served, the others are listed with their reason.
public struct ListenStart: Sendable {
    /// Port-protocol pairs held (a port listened on for TCP and UDP counts twice).
    public var held: Int
    public var failures: [ListenFailure]
    /// Worker processes holding the ports (0: this process holds them).
    public var workers: Int
}

/// Listeners on every port of a range at once, answering per the reply mode: on this process's loops when its
/// descriptors suffice, otherwise in worker processes (each with its own descriptor limit), with one stream of
/// events and one set of counters either way.
///
/// ```swift
/// let listen = Listen(ListenConfiguration(ports: try PortSet(parsing: "8000-8100")), group: group,
///                     descriptors: .current())
/// let start = try await listen.start()
/// for await event in listen.events { ... }   // until stop()
/// ```
public final class Listen: Sendable {
    public let configuration: ListenConfiguration
    public let events: AsyncStream<ListenEvent>
    private let continuation: AsyncStream<ListenEvent>.Continuation
    private let backend: Backend

    private enum Backend: Sendable {
        case local(LocalListener)
        case workers(ListenWorkers)
        case impossible(ListenError)
    }

    /// Workers at most: a range that needs more (a tiny descriptor limit) is a local problem, not 1,000 processes.
    public static let maxWorkers = 64

    /// `descriptors`: the limit this process runs with (the command raises it first). `executable`: this
    /// program, started as `listen --worker` when the range needs more descriptors than one process has.
    public init(_ configuration: ListenConfiguration, group: EventLoopGroup, descriptors: DescriptorBudget,
                executable: String = ListenWorkers.executable) {
        self.configuration = configuration
        (events, continuation) = AsyncStream<ListenEvent>.makeStream(bufferingPolicy: .unbounded)
        let perWorker = ListenWorkers.portsPerProcess(descriptors: descriptors, transports: configuration.transports.count)
        if configuration.ports.count <= perWorker {
            let budget = ConnectionBudget(limit: configuration.limits.connections.maxConnections)
            backend = .local(LocalListener(configuration, group: group, budget: budget, continuation: continuation))
        } else if (configuration.ports.count + perWorker - 1) / perWorker > Listen.maxWorkers {
            backend = .impossible(.tooFewDescriptors(needed: configuration.socketsNeeded,
                                                     perProcess: perWorker * configuration.transports.count))
        } else {
            backend = .workers(ListenWorkers(configuration, portsPerWorker: perWorker, loop: group.loops[0],
                                             executable: executable, continuation: continuation))
        }
    }

    /// Opens every port it can; the failures are returned, the rest serve from now on.
    public func start() async throws(ListenError) -> ListenStart {
        switch backend {
        case .local(let listener):
            let failures = await listener.start()
            return ListenStart(held: configuration.socketsNeeded - failures.count, failures: failures, workers: 0)
        case .workers(let workers):
            return try await workers.start()
        case .impossible(let error):
            throw error
        }
    }

    /// What the limits and reply rules did so far.
    public func counters() async -> ListenCounters {
        switch backend {
        case .local(let listener): return await listener.counters()
        case .workers(let workers): return await workers.counters()
        case .impossible: return ListenCounters()
        }
    }

    /// Closes every listener and connection (and ends the workers); the events sequence then ends.
    public func stop() async {
        switch backend {
        case .local(let listener): await listener.stop()
        case .workers(let workers): await workers.stop()
        case .impossible: break
        }
        continuation.finish()
    }
}

/// The listen on this process's loops: a `ListenShard` per loop, ports dealt in runs of 64.
final class LocalListener: Sendable {
    let configuration: ListenConfiguration
    private let group: EventLoopGroup
    private let budget: ConnectionBudget
    private let continuation: AsyncStream<ListenEvent>.Continuation
    private let ownUDPPorts: PortSet
    /// What echo connections that ask are told; this listener publishes it when it is the whole listen.
    let roster: RosterBoard
    private let publishesRoster: Bool
    private let shards = Mutex<[LoopBox<ListenShard>]>([])
    /// The counts at the moment the shards closed (they are gone after).
    private let final = Mutex<ListenCounters?>(nil)

    /// `ownUDPPorts`: the UDP ports of the whole listen, when this process holds only a share of them (a
    /// worker: its parent then publishes the whole listen's roster on `roster`).
    init(_ configuration: ListenConfiguration, group: EventLoopGroup, budget: ConnectionBudget,
         continuation: AsyncStream<ListenEvent>.Continuation, ownUDPPorts: PortSet? = nil, roster: RosterBoard = RosterBoard()) {
        self.ownUDPPorts = ownUDPPorts ?? configuration.ownUDPPorts
        self.roster = roster
        publishesRoster = ownUDPPorts == nil
        self.configuration = configuration
        self.group = group
        self.budget = budget
        self.continuation = continuation
    }

    /// Opens every port; returns those that could not be held, with their holders where /proc shows them.
    func start() async -> [ListenFailure] {
        let loops = group.loops
        let shares = Shard.deal(configuration.ports.sorted, over: loops.count)
        let (configuration, budget, continuation, own, roster) = (self.configuration, self.budget, self.continuation,
                                                                  ownUDPPorts, self.roster)
        let opened = await withTaskGroup(of: (LoopBox<ListenShard>, [ListenFailure]).self) { tasks in
            for (loop, share) in zip(loops, shares) where !share.isEmpty {
                tasks.addTask {
                    await loop.run {
                        let plan = ListenShard.Plan(ports: share, transports: configuration.transports,
                                                    bind: configuration.bind, reply: configuration.reply,
                                                    limits: configuration.limits, ownUDPPorts: own, roster: roster)
                        let shard = ListenShard(loop: loop, plan: plan, budget: budget) { events in
                            for event in events { continuation.yield(event) }
                        }
                        return (LoopBox(shard, loop: loop), shard.open())
                    }
                }
            }
            var all: [(LoopBox<ListenShard>, [ListenFailure])] = []
            for await result in tasks { all.append(result) }
            return all
        }
        shards.withLock { $0 = opened.map(\.0) }
        var failures = opened.flatMap(\.1).sorted { ($0.transport, $0.port) < ($1.transport, $1.port) }
        let taken = failures.filter { $0.errno == EADDRINUSE }
        if !taken.isEmpty {
            let holders = PortHolders.snapshot(ports: Set(taken.map(\.port)))
            for i in failures.indices where failures[i].errno == EADDRINUSE {
                failures[i].holder = holders.holder(of: failures[i].port, transport: failures[i].transport)
            }
        }
        if publishesRoster { roster.publish(ListenerRoster(configuration, failures: failures)) }
        return failures
    }

    func counters() async -> ListenCounters {
        if let final = final.withLock({ $0 }) { return final }
        var sum = ListenCounters()
        for shard in shards.withLock({ $0 }) {
            sum = sum + (await shard.loop.run { shard.value.counters })
        }
        return sum
    }

    func stop() async {
        let counters = await counters()
        let shards = self.shards.withLock { shards in
            defer { shards = [] }
            return shards
        }
        final.withLock { $0 = $0 ?? counters }
        await withTaskGroup(of: Void.self) { tasks in
            for shard in shards {
                tasks.addTask {
                    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                        shard.loop.execute { shard.value.stop { done.resume() } }
                    }
                }
            }
        }
    }
}

extension ListenerRoster {
    /// The roster of `configuration`'s listen, given the ports it could not hold.
    init(_ configuration: ListenConfiguration, failures: [ListenFailure]) {
        self.init(ports: configuration.ports, transports: configuration.transports,
                  failures: failures.map { ($0.port, $0.transport, $0.errno) })
    }
}

#if canImport(Glibc)
import Glibc
#endif
