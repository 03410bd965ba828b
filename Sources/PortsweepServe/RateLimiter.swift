import Metrics
import PortsweepEngine
import Synchronization
public import UVLoop

/// A rolling-window limit: `count` checks per `window` per client.
public struct RateLimit: Sendable, Equatable {
    public var count: Int
    public var window: Duration
    public init(count: Int, window: Duration) {
        self.count = count
        self.window = window
    }
    /// The original service's: 4 checks per rolling 60 s.
    public static let original = RateLimit(count: 4, window: .seconds(60))
}

/// Who shares one budget: an IPv4 address, or an IPv6 prefix (a /64 is what one customer usually gets, so a
/// budget per /128 would let one client take 2^64 budgets).
public struct ClientGrouping: Sendable, Equatable {
    public var ipv4Prefix: Int
    public var ipv6Prefix: Int
    public init(ipv4Prefix: Int = 32, ipv6Prefix: Int = 64) {
        self.ipv4Prefix = ipv4Prefix
        self.ipv6Prefix = ipv6Prefix
    }

    public func key(_ ip: IPAddress) -> IPAddress {
        let ip = ip.unmapped
        return ip.masked(prefix: ip.family == .v4 ? ipv4Prefix : ipv6Prefix)
    }
}

/// Checks per client in a rolling window, exactly (each admitted check's time is kept until it leaves the window).
///
/// Memory has a hard cap: at most `capacity` clients are remembered; when a new one comes and the table is full,
/// the client whose latest check is oldest is forgotten (counted in `portsweep_rate_limit_evictions_total`).
/// Expiry is O(1) per request: clients are kept in the order of their latest admitted check, so each request
/// looks at the oldest one or two and drops them once their last check has left the window.
final class RateLimiter: Sendable {
    private let limit: RateLimit
    private let grouping: ClientGrouping
    private let windowNanoseconds: Int64
    private let state: Mutex<LRUTable<IPAddress, Window>>
    private let clients = Gauge(label: "portsweep_rate_limit_clients")
    private let evictions = Counter(label: "portsweep_rate_limit_evictions_total")

    /// The admitted checks of one client, oldest first (at most `limit.count`).
    struct Window {
        var times: [Int64]
    }

    init(_ limit: RateLimit, grouping: ClientGrouping = ClientGrouping(), capacity: Int = 100_000) {
        self.limit = limit
        self.grouping = grouping
        let (seconds, atto) = limit.window.components
        windowNanoseconds = seconds * 1_000_000_000 + atto / 1_000_000_000
        state = Mutex(LRUTable(capacity: max(1, capacity)))
    }

    private static let origin = ContinuousClock.now
    private static var now: Int64 {
        let (seconds, atto) = (ContinuousClock.now - origin).components
        return seconds * 1_000_000_000 + atto / 1_000_000_000
    }

    /// Counts a check for `ip`, or returns how long it must wait.
    func admit(_ ip: IPAddress) -> Duration? {
        let key = grouping.key(ip)
        let now = RateLimiter.now
        let (wait, evicted, count) = state.withLock { table -> (Duration?, Bool, Int) in
            expire(&table, now: now)
            var window = table[key] ?? Window(times: [])
            window.times.removeFirst(window.times.prefix { now - $0 >= windowNanoseconds }.count)
            if window.times.count >= limit.count {
                let oldest = window.times[window.times.count - limit.count]
                table.update(key) { $0 = window }
                return (.nanoseconds(oldest + windowNanoseconds - now), false, table.count)
            }
            window.times.append(now)
            let evicted = table.set(key, window) != nil
            return (nil, evicted, table.count)
        }
        if evicted { evictions.increment() }
        clients.record(count)
        return wait
    }

    /// Drops the one or two least recent clients whose latest check has left the window: amortised, this keeps
    /// the table free of the expired without ever scanning it.
    private func expire(_ table: inout LRUTable<IPAddress, Window>, now: Int64) {
        for _ in 0..<2 {
            guard let (_, window) = table.leastRecent, let latest = window.times.last, now - latest >= windowNanoseconds
            else { return }
            table.removeLeastRecent()
        }
    }

    /// Takes back the latest check of `ip` (one the server failed to make).
    func refund(_ ip: IPAddress) {
        let key = grouping.key(ip)
        state.withLock { table in
            guard var window = table[key], !window.times.isEmpty else { return }
            window.times.removeLast()
            if window.times.isEmpty { table.remove(key) } else { table.update(key) { $0 = window } }
        }
    }

    /// Checks `ip` may still make in the rolling window now, without counting one.
    func remaining(_ ip: IPAddress) -> Int {
        let key = grouping.key(ip)
        let now = RateLimiter.now
        let used = state.withLock { table in table[key]?.times.filter { now - $0 < windowNanoseconds }.count ?? 0 }
        return max(0, limit.count - used)
    }

    var rule: RateLimit { limit }

    /// Clients remembered now.
    var count: Int { state.withLock { $0.count } }
}
