public import PortsweepEngine
public import UVLoop
import Synchronization

/// What to listen on and how to answer.
public struct ListenConfiguration: Sendable {
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
}

/// Why listening could not start; nothing is left open.
public enum ListenError: Error, Sendable, CustomStringConvertible {
    /// Some ports could not be listened on.
    case portsFailed([ListenFailure])
    /// This process cannot hold that many sockets.
    case tooManyPorts(needed: Int, available: Int)

    public var description: String {
        switch self {
        case .portsFailed(let failures):
            return "could not listen on \(failures.count) port\(failures.count == 1 ? "" : "s")"
        case .tooManyPorts(let needed, let available):
            return "\(needed) sockets needed but only \(available) descriptors are available (RLIMIT_NOFILE)"
        }
    }
}

/// Listeners on every port of a range at once, answering per the reply mode, spread over the group's loops.
///
/// ```swift
/// let listener = Listener(ListenConfiguration(ports: try PortSet(parsing: "8000-8100")), group: group)
/// try await listener.start()
/// for await event in listener.events { ... }   // until stop()
/// ```
public final class Listener: Sendable {
    public let configuration: ListenConfiguration
    private let group: EventLoopGroup
    private let state = Mutex<State>(State())
    public let events: AsyncStream<ListenEvent>
    private let continuation: AsyncStream<ListenEvent>.Continuation

    private struct State: @unchecked Sendable {  // shards are touched only on their own loops
        var shards: [(EventLoop, ListenShard)] = []
        var started = false
    }

    public init(_ configuration: ListenConfiguration, group: EventLoopGroup) {
        self.configuration = configuration
        self.group = group
        (events, continuation) = AsyncStream<ListenEvent>.makeStream(bufferingPolicy: .unbounded)
    }

    /// Sockets the listen needs: one per port and protocol.
    public var socketsNeeded: Int { configuration.ports.count * configuration.transports.count }

    /// Opens every listener. Throws `ListenError` (with everything closed again) when a port cannot be held.
    public func start(budget: DescriptorBudget = .raise()) async throws {
        guard socketsNeeded <= budget.available else {
            throw ListenError.tooManyPorts(needed: socketsNeeded, available: budget.available)
        }
        let ports = configuration.ports.sorted
        let loops = group.loops
        var shares = [[UInt16]](repeating: [], count: loops.count)
        for (i, port) in ports.enumerated() { shares[(i / 64) % loops.count].append(port) }
        let configuration = self.configuration
        let continuation = self.continuation
        let opened = await withTaskGroup(of: (Int, ListenShardBox, [ListenFailure]).self) { group in
            for (index, (loop, share)) in zip(loops, shares).enumerated() where !share.isEmpty {
                group.addTask(executorPreference: loop) {
                    let shard = ListenShard(loop: loop, ports: share, transports: configuration.transports,
                                            bind: configuration.bind, reply: configuration.reply,
                                            limits: configuration.limits,
                                            deliver: { for event in $0 { continuation.yield(event) } })
                    return (index, ListenShardBox(shard), shard.open())
                }
            }
            var all: [(Int, ListenShardBox, [ListenFailure])] = []
            for await result in group { all.append(result) }
            return all
        }
        state.withLock { state in
            state.shards = opened.map { (loops[$0.0], $0.1.shard) }
            state.started = true
        }
        let failures = opened.flatMap(\.2).sorted { ($0.transport, $0.port) < ($1.transport, $1.port) }
        if !failures.isEmpty {
            await stop()
            throw ListenError.portsFailed(failures)
        }
    }

    /// Closes every listener and connection; the events sequence then ends.
    public func stop() async {
        let shards = state.withLock { state -> [(EventLoop, ListenShard)] in
            defer { state.shards = [] }
            return state.shards
        }
        await withTaskGroup(of: Void.self) { group in
            for (loop, shard) in shards {
                let box = ListenShardBox(shard)
                group.addTask(executorPreference: loop) {
                    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                        box.shard.stop { done.resume() }
                    }
                }
            }
        }
        continuation.finish()
    }
}

/// Carries a shard between tasks; it is only ever used on its own loop.
private struct ListenShardBox: @unchecked Sendable {
    let shard: ListenShard
    init(_ shard: ListenShard) { self.shard = shard }
}
