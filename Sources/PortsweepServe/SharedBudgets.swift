import Foundation
public import Logging
import Metrics
import PortsweepEngine
import Synchronization
public import UVLoop
import UVRedis

/// `--rate-limit-store redis://HOST:PORT`: where several instances keep one budget per client.
public struct SharedBudgetStore: Sendable, Equatable {
    /// An address (the CLI resolves a name first).
    public var host: IPAddress
    public var port: Int
    /// AUTH's password (from a file or the environment, never the command line).
    public var password: String?
    /// Every key starts with it, so that several services (or tests) can share one Redis.
    public var keyPrefix = "portsweep:"
    /// Each command's deadline: past it, that decision is made locally and the connection made again.
    public var timeout: Duration = .milliseconds(250)

    public init(host: IPAddress, port: Int, password: String? = nil) {
        self.host = host
        self.port = port
        self.password = password
    }

    /// For logs: the URL without the password.
    public var description: String { "redis://\(host.family == .v6 ? "[\(host)]" : "\(host)"):\(port)" }
}

/// The check and bulk budgets in Redis, shared by every instance that names the same store and prefix; each
/// decision one atomic Lua script (the time is Redis's own, so instances' clocks need not agree). When Redis
/// cannot be reached, or does not answer within the deadline, that decision is this instance's own limiter's
/// (`portsweep_rate_limit_store_fallbacks_total`); the log says when the instance goes local and when it is
/// shared again, and `portsweep_rate_limit_store_up` says which it is now.
final class SharedBudgets: Sendable {
    let store: SharedBudgetStore
    private let client: RedisClient
    private let state: Availability
    private let tickets = Atomic<Int>(0)
    private let instance = String(UInt64.random(in: 0...UInt64.max), radix: 36)
    private let fallbacks = Counter(label: "portsweep_rate_limit_store_fallbacks_total")

    /// Shared or local now, told by the client's connection changes and by each command's outcome (whichever
    /// notices first); one log line per change.
    final class Availability: Sendable {
        private let now = Atomic<Int>(-1)  // -1 not known yet, 0 local, 1 shared
        private let up = Gauge(label: "portsweep_rate_limit_store_up")
        private let logger: Logger
        private let name: String

        init(name: String, logger: Logger) {
            self.name = name
            self.logger = logger
            up.record(0)
        }

        func mark(shared: Bool, _ why: @autoclosure () -> String) {
            let before = now.exchange(shared ? 1 : 0, ordering: .relaxed)
            guard before != (shared ? 1 : 0) else { return }
            up.record(shared ? 1 : 0)
            if shared {
                logger.notice("rate-limit store \(name) reachable: budgets are shared\(before == -1 ? "" : " again")")
            } else {
                logger.warning("rate-limit store \(name) unreachable (\(why())): this instance limits on its own until it is back")
            }
        }
    }

    init(_ store: SharedBudgetStore, on loop: EventLoop, logger: Logger) {
        self.store = store
        var options = RedisClient.Options(host: store.host, port: store.port, password: store.password)
        options.commandTimeout = store.timeout
        let state = Availability(name: store.description, logger: logger)
        self.state = state
        client = RedisClient(options, on: loop) { ready, why in state.mark(shared: ready, why) }
        client.start()
    }

    func close() async { await client.close() }

    var isReady: Bool { get async { await client.isReady } }

    private func key(_ kind: String, _ client: IPAddress) -> String { "\(store.keyPrefix)\(kind):\(client)" }

    /// Runs one script; nil when Redis could not decide (and the caller decides locally).
    private func run(_ script: String, key: String, _ arguments: [String]) async -> [RedisReply]? {
        do {
            let reply = try await client.command(["EVAL", script, "1", key] + arguments)
            guard case .array(let values) = reply else { throw RedisError.reply("unexpected reply \(reply)") }
            state.mark(shared: true, "")
            return values
        } catch {
            fallbacks.increment()
            state.mark(shared: false, "\(error)")
            return nil
        }
    }

    // MARK: Checks: a sorted set per client of its admitted checks' times (µs), the rolling window exactly

    struct Admission {
        /// nil: admitted.
        var wait: Duration?
        var remaining: Int
        /// The sorted set's member this check added (to take back).
        var ticket: String?
    }

    /// KEYS[1] the client's set; ARGV: limit, window (µs), ticket.
    /// Answers {1, remaining} admitted, or {0, µs to wait}.
    static let admitScript = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
        local n = redis.call('ZCARD', KEYS[1])
        if n >= limit then
          local oldest = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
          return {0, math.max(1, tonumber(oldest[2]) + window - now)}
        end
        redis.call('ZADD', KEYS[1], now, ARGV[3])
        redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
        return {1, limit - n - 1}
        """

    /// KEYS[1] the client's set; ARGV: limit, window (µs). Answers {checks left}.
    static let remainingScript = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local n = redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.0f', now - tonumber(ARGV[2])), '+inf')
        return {math.max(0, tonumber(ARGV[1]) - n)}
        """

    /// KEYS[1] the client's set; ARGV: the ticket. Answers {removed}.
    static let refundScript = "return {redis.call('ZREM', KEYS[1], ARGV[1])}"

    private static func micros(_ duration: Duration) -> Int64 {
        let (seconds, atto) = duration.components
        return seconds * 1_000_000 + atto / 1_000_000_000_000
    }

    func admit(_ ip: IPAddress, limit: RateLimit, grouping: ClientGrouping) async -> Admission? {
        let ticket = "\(instance).\(tickets.add(1, ordering: .relaxed).newValue)"
        guard let values = await run(Self.admitScript, key: key("checks", grouping.key(ip)),
                                     ["\(limit.count)", "\(Self.micros(limit.window))", ticket]),
              values.count == 2, case .integer(let admitted) = values[0], case .integer(let value) = values[1]
        else { return nil }
        if admitted == 1 { return Admission(wait: nil, remaining: Int(value), ticket: ticket) }
        return Admission(wait: .microseconds(value), remaining: 0, ticket: nil)
    }

    func remaining(_ ip: IPAddress, limit: RateLimit, grouping: ClientGrouping) async -> Int? {
        guard let values = await run(Self.remainingScript, key: key("checks", grouping.key(ip)),
                                     ["\(limit.count)", "\(Self.micros(limit.window))"]),
              case .integer(let left)? = values.first else { return nil }
        return Int(left)
    }

    func refund(_ ip: IPAddress, ticket: String, grouping: ClientGrouping) async {
        _ = await run(Self.refundScript, key: key("checks", grouping.key(ip)), [ticket])
    }

    // MARK: Bulk sweeps: a token bucket per client (a hash of tokens and the time it was last filled)

    /// KEYS[1] the client's bucket; ARGV: tests per hour (the bucket's size), tests wanted (negative: given
    /// back). Answers {1} taken, or {0, ms to wait}.
    static let takeScript = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local size, want = tonumber(ARGV[1]), tonumber(ARGV[2])
        local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
        local tokens = tonumber(bucket[1]) or size
        local at = tonumber(bucket[2]) or now
        tokens = math.min(size, tokens + (now - at) / 3600000000 * size)
        local taken = 0
        if want <= tokens then tokens = math.min(size, tokens - want); taken = 1 end
        redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.0f', now))
        redis.call('PEXPIRE', KEYS[1], 3600000)
        if taken == 1 then return {1} end
        return {0, math.ceil((want - tokens) / size * 3600000)}
        """

    func take(_ tests: Int, for ip: IPAddress, perHour: Int, grouping: ClientGrouping) async -> TestBudget.Decision? {
        guard let values = await run(Self.takeScript, key: key("tests", grouping.key(ip)), ["\(perHour)", "\(tests)"]),
              case .integer(let taken)? = values.first else { return nil }
        if taken == 1 { return .admitted }
        guard values.count == 2, case .integer(let wait) = values[1] else { return nil }
        return .wait(.milliseconds(wait))
    }

    func refund(_ tests: Int, for ip: IPAddress, perHour: Int, grouping: ClientGrouping) async {
        _ = await run(Self.takeScript, key: key("tests", grouping.key(ip)), ["\(perHour)", "\(-tests)"])
    }
}
