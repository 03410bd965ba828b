public import UVLoop
import Synchronization

/// What a running shard publishes for progress displays, from its loop, read from any thread.
public final class ShardProgress: Sendable {
    private let deadline = Atomic<UInt64>(0)

    public init() {}

    /// When (`MonotonicClock`, in ms) the last port now waiting out a deadline will have its verdict at the latest;
    /// 0 when none waits.
    public var lastDeadline: UInt64 { deadline.load(ordering: .relaxed) }

    func publish(_ value: UInt64) { deadline.store(value, ordering: .relaxed) }

    /// The process's clock that `lastDeadline` is on.
    public static var now: UInt64 { MonotonicClock.milliseconds }
}

/// A running shard, to cancel it from any thread.
public final class ShardHandle: @unchecked Sendable {
    private let loop: EventLoop
    // Loop thread only.
    private weak var scheduler: ShardScheduler?

    init(loop: EventLoop, scheduler: ShardScheduler?) {
        self.loop = loop
        self.scheduler = scheduler
    }

    /// Stops the shard: no more ports start, those in flight close; its `done` reports `cancelled`.
    public func cancel() {
        loop.execute { [self] in scheduler?.cancel() }
    }
}

/// Starts shards: one protocol's tests of a share of the ports, on one loop.
public enum Shard {
    /// Starts testing `ports` (in this order) on `loop`. Call on the loop's thread. `deliver` gets results once per
    /// loop iteration; `done` is called last, once, after every handle of the shard is closed.
    public static func start(
        _ transport: Transport, on loop: EventLoop, ports: [UInt16], settings: ShardSettings,
        bind: IPAddress, target: IPAddress, swept: PortSet, direction: SweepDirection = .inbound,
        progress: ShardProgress = ShardProgress(), rate: RateLimit? = nil,
        deliver: @escaping ([PortResult]) -> Void, done: @escaping (ShardEnd) -> Void
    ) -> ShardHandle {
        let scheduler = ShardScheduler(loop: loop, ports: ports, settings: settings, deliver: deliver, done: done)
        scheduler.progress = progress
        scheduler.rate = rate
        switch (transport, direction) {
        case (.tcp, .outbound(let line, let answer)):
            scheduler.probe = OutboundTCPProbe(scheduler: scheduler, capacity: settings.capacity, target: target, line: line, answer: answer)
        case (.udp, .outbound(let line, let answer)):
            do {
                scheduler.probe = try OutboundUDPProbe(scheduler: scheduler, capacity: settings.capacity, target: target,
                                                       line: line, answer: answer, window: settings.window)
            } catch {
                done(ShardEnd(retryCandidates: [], failure: .clientSocket(errno: error.errno), cancelled: false))
                return ShardHandle(loop: loop, scheduler: nil)
            }
        case (.tcp, .inbound):
            scheduler.probe = TCPProbe(scheduler: scheduler, capacity: settings.capacity, bind: bind, target: target,
                                       swept: swept)
        case (.udp, .inbound):
            do {
                scheduler.probe = try UDPProbe(scheduler: scheduler, capacity: settings.capacity, bind: bind,
                                               target: target, window: settings.window)
            } catch {
                done(ShardEnd(retryCandidates: [], failure: .clientSocket(errno: error.errno), cancelled: false))
                return ShardHandle(loop: loop, scheduler: nil)
            }
        }
        scheduler.start()
        return ShardHandle(loop: loop, scheduler: scheduler)
    }
}

extension Shard {
    /// Ports dealt over `loops` in runs of 64 consecutive ports, round-robin: every loop works near the same part
    /// of the range, so results stream out in order with little buffering, and a loop's listeners are
    /// neighbours. The one dealing of the sweep and of listen.
    public static func deal(_ ports: [UInt16], over loops: Int) -> [[UInt16]] {
        var shares = [[UInt16]](repeating: [], count: max(1, loops))
        for (i, port) in ports.enumerated() { shares[(i / 64) % shares.count].append(port) }
        return shares
    }
}
