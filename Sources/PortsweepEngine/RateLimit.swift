public import UVLoop
import Synchronization

/// `--rate`: port tests started per second over every loop of a sweep together, one limit shared by all shards
/// (a generic cell rate algorithm on one atomic: each start moves the theoretical arrival time one interval on;
/// a start is allowed while that time runs at most `burst` ahead of now). A real network and the far end's
/// rate limits decide how fast a remote sweep may go; a share per loop would run slow once one loop is done.
public final class RateLimit: Sendable {
    private let interval: UInt64
    private let burst: UInt64
    private let arrival = Atomic<UInt64>(0)
    /// A limit over this one and others (a checker's probes per second over all its sweeps): a start needs both.
    private let parent: RateLimit?

    /// `perSecond` > 0. The burst covers one tick of the shard's coarse timer (50 ms at most), which is when a
    /// throttled shard looks again: the long-run rate stays exact.
    public init(perSecond: Double, burstSeconds: Double = 0.05, within parent: RateLimit? = nil) {
        interval = max(1, UInt64(1e9 / perSecond))
        burst = UInt64(burstSeconds * 1e9)
        self.parent = parent
    }

    public var perSecond: Double { 1e9 / Double(interval) }

    /// Takes one start if one is allowed at `now` (`MonotonicClock.nanoseconds`).
    public func take(now: UInt64 = MonotonicClock.nanoseconds) -> Bool {
        // The shared limit first: a start it refuses costs this one nothing.
        if let parent, !parent.take(now: now) { return false }
        var current = arrival.load(ordering: .relaxed)
        while true {
            let due = max(current, now)
            // Due further ahead of now than the burst allows: not yet.
            if due - now > burst { return false }
            let next = due + interval
            let (exchanged, original) = arrival.compareExchange(expected: current, desired: next, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }
}
