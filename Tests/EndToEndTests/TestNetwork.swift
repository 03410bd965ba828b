import Foundation
import Synchronization
import Testing

/// Test hosts: network namespaces a test makes for itself and always removes.
///
/// - `.loopback`: one host; portsweep targets 127.0.0.1 and the firewall filters its input hook.
/// - `.veth`: the near host (portsweep, its listeners) and the far host, a router joined to it by a veth pair.
///   portsweep targets the router's address; the router forwards every port back to the near host (destination
///   NAT, and source NAT so replies return through it: a hairpin, as a home router's port forward), and its
///   firewall filters the forward hook. Addresses come from 198.18.0.0/15, the range set aside for network
///   benchmarks, and never leave the namespaces.
final class TestNetwork {
    enum Kind: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case loopback, veth
        var testDescription: String { rawValue }
    }

    static let nearAddress = "198.18.0.1"
    static let farAddress = "198.18.0.2"
    private static let counter = Atomic<Int>(0)

    let kind: Kind
    /// Namespace names: the host with portsweep, and (veth) the router at the far end.
    let near: String
    let far: String?
    private var created: [String] = []

    /// Where portsweep connects.
    var target: String { kind == .loopback ? "127.0.0.1" : TestNetwork.farAddress }
    /// The host whose firewall sits between client and listener, and the hook it filters.
    private var firewallHost: String { far ?? near }
    private var firewallHook: String { kind == .loopback ? "input" : "forward" }

    static var available: Bool {
        Portsweep.isRoot && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
            && FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft")
    }

    private init(kind: Kind) {
        self.kind = kind
        let id = "pst\(getpid() % 100_000)n\(TestNetwork.counter.wrappingAdd(1, ordering: .relaxed).oldValue)"
        near = id + "a"
        far = kind == .veth ? id + "b" : nil
    }

    /// Runs `body` with fresh hosts of `kind` and removes them afterwards, whatever happens in `body`.
    static func with<R>(_ kind: Kind, _ body: (TestNetwork) throws -> R) throws -> R {
        let network = TestNetwork(kind: kind)
        defer { network.remove() }
        try network.create()
        return try body(network)
    }

    private func create() throws {
        try shell("ip netns add \(near)")
        created.append(near)
        try shell("ip -n \(near) link set lo up")
        guard let far else { return }
        try shell("ip netns add \(far)")
        created.append(far)
        // veth names: at most 15 characters.
        let (a, b) = (near.suffix(12) + "v", far.suffix(12) + "v")
        try shell("""
            ip link add \(a) type veth peer name \(b)
            ip link set \(a) netns \(near)
            ip link set \(b) netns \(far)
            ip -n \(near) addr add \(TestNetwork.nearAddress)/30 dev \(a)
            ip -n \(near) link set \(a) up
            ip -n \(far) addr add \(TestNetwork.farAddress)/30 dev \(b)
            ip -n \(far) link set \(b) up
            ip -n \(far) link set lo up
            ip netns exec \(far) sysctl -qw net.ipv4.ip_forward=1 net.ipv4.icmp_ratelimit=0
            ip netns exec \(far) nft -f - <<'RULES'
            table ip portforward {
              chain prerouting { type nat hook prerouting priority dstnat; ip daddr \(TestNetwork.farAddress) dnat to \(TestNetwork.nearAddress); }
              chain postrouting { type nat hook postrouting priority srcnat; ct status dnat snat to \(TestNetwork.farAddress); }
            }
            RULES
            """)
    }

    /// Deletes the namespaces (the veth pair goes with them). Idempotent.
    func remove() {
        for name in created.reversed() { _ = try? shell("ip netns del \(name)") }
        created = []
    }

    /// Loads filter rules (nft rule lines, e.g. `tcp dport 1000-1999 drop`) into the firewall host's hook.
    /// `hook`: where the rules sit; by default where traffic to the tested host passes (input on loopback,
    /// forward on the router).
    func firewall(_ rules: [String], hook: String? = nil) throws {
        guard !rules.isEmpty else { return }
        try shell("""
            ip netns exec \(firewallHost) nft -f - <<'RULES'
            table inet sweeptest {
              chain filter {
                type filter hook \(hook ?? firewallHook) priority 0; policy accept;
            \(rules.map { "    " + $0 }.joined(separator: "\n"))
              }
            }
            RULES
            """)
    }

    /// Runs `portsweep sweep` on the near host against `target`. `holding`: ports another process holds on the
    /// near host while it runs (TCP listeners and UDP sockets).
    func sweep(_ arguments: [String], holdingTCP: [UInt16] = [], holdingUDP: [UInt16] = []) throws -> (Portsweep.Run, Duration) {
        let setup = Portsweep.holding(tcp: holdingTCP, udp: holdingUDP)
        let start = ContinuousClock.now
        let run = try Portsweep.run(["sweep", "--target", target] + arguments, netns: near, setup: setup)
        return (run, ContinuousClock.now - start)
    }

    @discardableResult
    private func shell(_ script: String) throws -> String { try runSetupScript(script) }
}

/// Runs a setup script of test hosts with /bin/sh; its stderr is the error's message when it fails.
@discardableResult
func runSetupScript(_ script: String) throws -> String {
    let process = TestProcess()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", script]
    let err = Pipe()
    process.standardError = err
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    if process.terminationStatus != 0 { throw TestNetworkError(script: script, message: message) }
    return message
}

struct TestNetworkError: Error, CustomStringConvertible {
    let script: String
    let message: String
    var description: String { "setting up test hosts failed: \(message)\nscript:\n\(script)" }
}

/// Compares grouped output line for line; a failure lists which lines (ports and verdicts) were expected and
/// which came instead.
func expectLines(_ actual: [String], _ expected: [String], _ context: String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    guard actual != expected else { return }
    let missing = expected.filter { !actual.contains($0) }
    let unexpected = actual.filter { !expected.contains($0) }
    Issue.record("""
        \(context): output differs.
        expected but missing: \(missing)
        got instead: \(unexpected)
        full output: \(actual)
        """, sourceLocation: sourceLocation)
}
