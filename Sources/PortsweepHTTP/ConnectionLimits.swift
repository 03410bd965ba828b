public import Synchronization

/// Limits that keep a server answering whatever its clients do: no client holds more than its share of
/// connections, memory or time. One set for listen's listeners and serve's web service.
/// Codable: a listen hands its limits to its worker processes.
public struct ConnectionLimits: Sendable, Codable, Equatable {
    /// Open connections at most over the whole server: every loop and, through a shared `ConnectionBudget`,
    /// every worker process. At the cap the least recently active connection makes room for a new one.
    public var maxConnections: Int = 10_000
    /// Open connections at most on one port; at the cap the port's least recently active one makes room.
    public var maxPerPort: Int = 1_000
    /// A connection that sends nothing for this long is closed.
    public var idleTimeout: Duration = .seconds(60)
    /// A request (HTTP: its head and body) must arrive whole within this long of its first byte: 408 after.
    public var requestTimeout: Duration = .seconds(10)
    /// Bytes per second at least, over each `rateWindow`, from a connection that is sending (0: no minimum).
    /// One byte every few seconds keeps an idle timer alive forever; this does not.
    public var minRate: Int = 100
    public var rateWindow: Duration = .seconds(10)
    /// Reading stops while more than this much reply is queued for a connection, and resumes when it has
    /// drained to half: a client that sends and never reads costs this much, not what it sends.
    public var maxQueuedBytes: Int = 64 * 1024
    /// HTTP: bytes of request head at most (431 beyond); request-target length (414); body bytes (413).
    public var maxHeadBytes: Int = 32 * 1024
    public var maxTargetLength: Int = 4096
    public var maxBodyBytes: Int = 1 << 20

    public init() {}
}

/// What a server's limits did, for the operator: counted per loop, summed by the mode.
public struct ConnectionCounters: Sendable, Equatable, Codable {
    /// Connections closed to make room for a new one at a cap.
    public var evicted = 0
    /// Connections refused because every slot was busy (nothing could be evicted).
    public var refused = 0
    /// Requests that missed the request deadline (408).
    public var requestTimeouts = 0
    /// Connections closed for sending below the minimum rate.
    public var tooSlow = 0
    /// Connections closed after the idle timeout.
    public var idleClosed = 0
    /// Times reading was paused because replies were queued (a client not reading).
    public var backpressurePauses = 0
    /// accept() failures (EMFILE...).
    public var acceptErrors = 0
    /// HTTP requests refused by a limit or as malformed (400, 413, 414, 431, 505; 408 is `requestTimeouts`).
    public var refusedRequests = 0

    public init() {}

    public static func + (a: ConnectionCounters, b: ConnectionCounters) -> ConnectionCounters {
        var sum = a
        sum.evicted += b.evicted
        sum.refused += b.refused
        sum.requestTimeouts += b.requestTimeouts
        sum.tooSlow += b.tooSlow
        sum.idleClosed += b.idleClosed
        sum.backpressurePauses += b.backpressurePauses
        sum.acceptErrors += b.acceptErrors
        sum.refusedRequests += b.refusedRequests
        return sum
    }
}

/// The connection slots of a whole server, shared by its loops and, in shared memory, by its worker processes:
/// `take` before a connection is served, `give` after it closed. Exact: a slot is taken with one atomic
/// increment and handed back at once when that went past the limit.
public final class ConnectionBudget: @unchecked Sendable {  // the counters are atomics
    public let limit: Int
    private let total: UnsafeMutablePointer<Atomic<Int>>
    /// This process's own count, for a parent to take back the slots of a worker that died.
    private let mine: UnsafeMutablePointer<Atomic<Int>>?
    private let owned: Bool

    /// A budget for this process alone.
    public init(limit: Int) {
        self.limit = max(1, limit)
        total = .allocate(capacity: 1)
        total.initialize(to: Atomic(0))
        mine = nil
        owned = true
    }

    /// A budget in memory shared with other processes (kept mapped by the caller for the budget's life).
    public init(limit: Int, total: UnsafeMutablePointer<Atomic<Int>>, mine: UnsafeMutablePointer<Atomic<Int>>?) {
        self.limit = max(1, limit)
        self.total = total
        self.mine = mine
        owned = false
    }

    deinit {
        if owned {
            total.deinitialize(count: 1)
            total.deallocate()
        }
    }

    public func take() -> Bool {
        if total.pointee.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue > limit {
            total.pointee.wrappingSubtract(1, ordering: .acquiringAndReleasing)
            return false
        }
        mine?.pointee.wrappingAdd(1, ordering: .relaxed)
        return true
    }

    public func give() {
        total.pointee.wrappingSubtract(1, ordering: .acquiringAndReleasing)
        mine?.pointee.wrappingSubtract(1, ordering: .relaxed)
    }

    /// Slots taken now, over every process sharing the budget.
    public var inUse: Int { total.pointee.load(ordering: .relaxed) }
}
