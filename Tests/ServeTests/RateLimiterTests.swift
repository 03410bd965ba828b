import PortsweepEngine
@testable import PortsweepServe
import Testing
import UVLoop

@Suite struct RateLimiterTests {
    static func ip(_ n: Int) -> IPAddress { IPAddress(v4: [10, UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)]) }

    @Test func aRollingWindowPerClient() {
        let limiter = RateLimiter(RateLimit(count: 2, window: .seconds(60)))
        #expect(limiter.admit(Self.ip(1)) == nil)
        #expect(limiter.admit(Self.ip(1)) == nil)
        let wait = limiter.admit(Self.ip(1))
        #expect(wait != nil && wait! <= .seconds(60) && wait! > .seconds(59))
        #expect(limiter.admit(Self.ip(2)) == nil)
        limiter.refund(Self.ip(1))
        #expect(limiter.admit(Self.ip(1)) == nil)
    }

    @Test func remainingCountsDownWithoutSpendingACheck() {
        let limiter = RateLimiter(RateLimit(count: 3, window: .seconds(60)))
        #expect(limiter.remaining(Self.ip(1)) == 3)
        #expect(limiter.remaining(Self.ip(1)) == 3)
        _ = limiter.admit(Self.ip(1))
        #expect(limiter.remaining(Self.ip(1)) == 2)
        _ = limiter.admit(Self.ip(1)); _ = limiter.admit(Self.ip(1)); _ = limiter.admit(Self.ip(1))
        #expect(limiter.remaining(Self.ip(1)) == 0)
        #expect(limiter.remaining(Self.ip(2)) == 3)
    }

    @Test func theTableNeverHoldsMoreThanItsCapacity() {
        let limiter = RateLimiter(RateLimit(count: 4, window: .seconds(60)), capacity: 1000)
        for n in 0..<5000 { _ = limiter.admit(Self.ip(n)) }
        #expect(limiter.count == 1000)
    }

    @Test func expiredClientsLeaveAFewPerRequestWithoutAScan() async throws {
        let limiter = RateLimiter(RateLimit(count: 1, window: .milliseconds(20)))
        for n in 0..<100 { _ = limiter.admit(Self.ip(n)) }
        try await Task.sleep(for: .milliseconds(40))
        // One request drops at most the two oldest expired clients: expiry is O(1) per request...
        _ = limiter.admit(Self.ip(1_000_000))
        #expect(limiter.count == 99)
        // ...and over enough requests every expired one goes.
        for _ in 0..<60 { _ = limiter.admit(Self.ip(1_000_000)) }
        #expect(limiter.count == 1)
    }

    @Test func ipv6AddressesShareABudgetPerPrefix() {
        let limiter = RateLimiter(RateLimit(count: 1, window: .seconds(60)), grouping: ClientGrouping(ipv6Prefix: 64))
        #expect(limiter.admit(IPAddress("2001:db8:1:2::a")!) == nil)
        #expect(limiter.admit(IPAddress("2001:db8:1:2:ffff::1")!) != nil)
        #expect(limiter.admit(IPAddress("2001:db8:1:3::a")!) == nil)
        // An IPv4-mapped address is its IPv4 address.
        #expect(limiter.admit(IPAddress("192.0.2.1")!) == nil)
        #expect(limiter.admit(IPAddress("::ffff:192.0.2.1")!) != nil)
    }
}

@Suite struct ClientAddressTests {
    static let proxies = [CIDR("10.0.0.0/8")!]

    static func resolve(_ peer: String, _ forwarded: [String]) -> Result<IPAddress, ClientAddress.Refusal> {
        ClientAddress.resolve(peer: IPAddress(peer), forwardedFor: forwarded, trusted: proxies)
    }

    @Test func anUntrustedPeerIsTheClientWhateverItSays() throws {
        #expect(try Self.resolve("192.0.2.9", ["198.51.100.1"]).get() == IPAddress("192.0.2.9"))
        #expect(try Self.resolve("127.0.0.1", []).get() == .loopbackV4)
    }

    @Test func fromATrustedProxyTheRightmostUntrustedEntry() throws {
        #expect(try Self.resolve("10.0.0.1", ["203.0.113.5, 198.51.100.7, 10.1.1.1"]).get() == IPAddress("198.51.100.7"))
        #expect(try Self.resolve("10.0.0.1", ["203.0.113.5", "198.51.100.7:80"]).get() == IPAddress("198.51.100.7"))
        #expect(try Self.resolve("10.0.0.1", ["[2001:db8::1]:443"]).get() == IPAddress("2001:db8::1"))
        #expect(try Self.resolve("10.0.0.1", ["::ffff:198.51.100.8"]).get() == IPAddress("198.51.100.8"))
    }

    @Test func whatCannotBePinnedIsRefused() {
        #expect(Self.resolve("10.0.0.1", []) == .failure(.proxyNamedNoClient))
        #expect(Self.resolve("10.0.0.1", ["10.2.2.2"]) == .failure(.proxyNamedNoClient))
        #expect(Self.resolve("10.0.0.1", ["unknown"]) == .failure(.unparsable("unknown")))
        #expect(Self.resolve("10.0.0.1", ["198.51.100.7, _hidden"]) == .failure(.unparsable("_hidden")))
        #expect(Self.resolve("10.0.0.1", ["2001:db8::1:443"]).map { "\($0)" } == .success("2001:db8::1:443"))
        #expect(Self.resolve("10.0.0.1", ["::1"]) == .failure(.notACaller(.loopbackV6, "a loopback")))
        #expect(Self.resolve("10.0.0.1", ["0.0.0.0"]) == .failure(.notACaller(.anyV4, "an unspecified")))
    }
}
