import Foundation
import Synchronization
import Testing

/// Three hosts in network namespaces a test makes for itself and always removes: a client on a home LAN, its
/// router, and a host on the "internet" (the checker and the remote listener of #11).
///
///     client 198.18.1.2 ── 198.18.1.1 router 198.18.2.1 ── 198.18.2.2 internet
///
/// The router masquerades what the LAN sends out (the internet host has no route to the LAN, as on the real
/// internet) and forwards every port of its outside address to the client (a whole-range port forward). Its
/// `forward` filter is where a test puts the ISP's blocks. 198.18.0.0/15 is set aside for network benchmarks;
/// none of it leaves the namespaces.
final class HomeNetwork {
    static let clientAddress = "198.18.1.2"
    static let routerLAN = "198.18.1.1"
    static let routerWAN = "198.18.2.1"
    static let internetAddress = "198.18.2.2"
    private static let counter = Atomic<Int>(0)

    let client: String, router: String, internet: String
    private let wan: String
    private var created: [String] = []

    static var available: Bool { TestNetwork.available }

    private init() {
        let id = "psh\(getpid() % 100_000)n\(HomeNetwork.counter.wrappingAdd(1, ordering: .relaxed).oldValue)"
        (client, router, internet) = (id + "c", id + "r", id + "i")
        wan = String(id.suffix(12)) + "w"
    }

    /// Runs `body` with fresh hosts and removes them afterwards, whatever happens in `body`.
    static func with<R>(_ body: (HomeNetwork) throws -> R) throws -> R {
        let network = HomeNetwork()
        defer { network.remove() }
        try network.create()
        return try body(network)
    }

    private func create() throws {
        for name in [client, router, internet] {
            try shell("ip netns add \(name)")
            created.append(name)
            try shell("ip -n \(name) link set lo up")
        }
        let (lanC, lanR) = (String(client.suffix(12)) + "l", String(router.suffix(12)) + "l")
        let wanI = String(internet.suffix(12)) + "w"
        try shell("""
            set -e
            ip link add \(lanC) type veth peer name \(lanR)
            ip link set \(lanC) netns \(client)
            ip link set \(lanR) netns \(router)
            ip link add \(wan) type veth peer name \(wanI)
            ip link set \(wan) netns \(router)
            ip link set \(wanI) netns \(internet)
            ip -n \(client) addr add \(HomeNetwork.clientAddress)/24 dev \(lanC)
            ip -n \(client) link set \(lanC) up
            ip -n \(client) route add default via \(HomeNetwork.routerLAN)
            ip -n \(router) addr add \(HomeNetwork.routerLAN)/24 dev \(lanR)
            ip -n \(router) addr add \(HomeNetwork.routerWAN)/24 dev \(wan)
            ip -n \(router) link set \(lanR) up
            ip -n \(router) link set \(wan) up
            ip -n \(internet) addr add \(HomeNetwork.internetAddress)/24 dev \(wanI)
            ip -n \(internet) link set \(wanI) up
            ip netns exec \(router) sysctl -qw net.ipv4.ip_forward=1 net.ipv4.icmp_ratelimit=0
            ip netns exec \(internet) sysctl -qw net.ipv4.icmp_ratelimit=0
            ip netns exec \(client) sysctl -qw net.ipv4.icmp_ratelimit=0
            ip netns exec \(router) nft -f - <<'RULES'
            table ip home {
              chain prerouting { type nat hook prerouting priority dstnat; iifname "\(wan)" ip daddr \(HomeNetwork.routerWAN) dnat to \(HomeNetwork.clientAddress); }
              chain postrouting { type nat hook postrouting priority srcnat; oifname "\(wan)" masquerade; }
            }
            RULES
            """)
    }

    /// Deletes the namespaces (the veth pairs go with them) and the client's hosts file. Idempotent.
    func remove() {
        for name in created.reversed() { _ = try? shell("ip netns del \(name)") }
        created = []
        try? FileManager.default.removeItem(atPath: "/etc/netns/\(client)")
    }

    /// The client's /etc/hosts (`198.18.2.2 checker.example`): `ip netns exec` mounts /etc/netns/NAME/hosts
    /// over /etc/hosts, so names resolve there and nowhere else.
    func hosts(_ lines: String) throws {
        try FileManager.default.createDirectory(atPath: "/etc/netns/\(client)", withIntermediateDirectories: true)
        try lines.write(toFile: "/etc/netns/\(client)/hosts", atomically: true, encoding: .utf8)
    }

    /// The ISP's filter on the router's forward hook. Rules may say `out` and `in` for the two directions
    /// (`out tcp dport 2100-2199 drop`: what the LAN sends to the internet).
    func isp(_ rules: [String]) throws {
        let lines = rules.map { rule -> String in
            if rule.hasPrefix("out ") { return "oifname \"\(wan)\" " + rule.dropFirst(4) }
            if rule.hasPrefix("in ") { return "iifname \"\(wan)\" " + rule.dropFirst(3) }
            return rule
        }
        try shell("""
            ip netns exec \(router) nft -f - <<'RULES'
            table inet isp {
              chain forward {
                type filter hook forward priority 0; policy accept;
            \(lines.map { "    " + $0 }.joined(separator: "\n"))
              }
            }
            RULES
            """)
    }

    /// `ip netns exec NAME`, to put in front of a command.
    static func launcher(_ namespace: String) -> [String] { ["/usr/sbin/ip", "netns", "exec", namespace] }

    @discardableResult
    func shell(_ script: String) throws -> String { try runSetupScript(script) }

    /// Checks a sweep's `--format json --no-group` output against `expected(port, protocol)` ("PASS",
    /// "FAIL ETIMEDOUT"): how many records there were, and each one that differs.
    static func verdicts(_ stdout: String, expected: (Int, String) -> String) throws -> (seen: Int, wrong: [String]) {
        var seen = 0
        var wrong: [String] = []
        for line in stdout.split(separator: "\n") {
            let record = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let (port, proto) = (record["port"] as! Int, record["protocol"] as! String)
            let got = [record["result"] as! String, record["errno"] as? String].compactMap { $0 }.joined(separator: " ")
            if got != expected(port, proto) { wrong.append("\(proto) \(port): \(got), expected \(expected(port, proto))") }
            seen += 1
        }
        return (seen, wrong)
    }
}
