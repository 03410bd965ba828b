import Foundation
import Testing

/// Big sweeps and privilege checks, each in a network namespace of its own: a fresh loopback with no other
/// listener and no TIME_WAIT from earlier runs. Root only (CI runs as root).
@Suite(.enabled(if: Portsweep.canMakeNamespaces, "needs root, unshare and ip to make network namespaces"))
struct NamespaceSweepTests {
    @Test func everyTCPPortPasses() throws {
        for _ in 0..<2 {
            let run = try Portsweep.run(["sweep", "--ports", "-", "--tcp-only", "--always-print-protocol"], inNamespace: true)
            #expect(run.lines == ["[PASS] TCP 1-65535"], "stderr: \(run.stderr)")
            #expect(run.status == 0)
            print("full sweep: \(run.errorLines.last ?? "")")
        }
    }

    @Test func everyUDPPortFrom1024Passes() throws {
        for _ in 0..<3 {
            let run = try Portsweep.run(["sweep", "--ports", "1024-65535", "--udp-only", "--always-print-protocol"],
                                        inNamespace: true)
            #expect(run.lines == ["[PASS] UDP 1024-65535"], "stderr: \(run.stderr)")
            #expect(run.status == 0)
            print("full UDP sweep: \(run.errorLines.last ?? "")")
        }
    }

    @Test func everyPortBothProtocolsPasses() throws {
        let run = try Portsweep.run(["sweep", "--ports", "-"], inNamespace: true)
        #expect(run.lines == ["[PASS] TCP/UDP 1-65535"], "stderr: \(run.stderr)")
        #expect(run.status == 0)
        print("full TCP+UDP sweep: \(run.errorLines.last ?? "")")
    }

    @Test func privilegedPortsAsNobodyAreSudo() throws {
        let run = try Portsweep.run(["sweep", "--ports", "1020-1030"], inNamespace: true, asUser: "nobody")
        #expect(run.lines == ["[SUDO] TCP/UDP 1020-1023", "[PASS] TCP/UDP 1024-1030"], "stderr: \(run.stderr)")
        #expect(run.status == 1)
        let single = try Portsweep.run(["sweep", "--test-single-port", "80"], inNamespace: true, asUser: "nobody")
        #expect(single.status == 4)
    }

    @Test func ipv6LoopbackPasses() throws {
        let run = try Portsweep.run(["sweep", "--ports", "1-2000", "--target", "::1", "-q"], inNamespace: true)
        #expect(run.lines == ["[PASS] TCP/UDP 1-2000"], "stderr: \(run.stderr)")
        #expect(run.status == 0)
    }

    @Test func verboseShowsTheWindow() throws {
        let run = try Portsweep.run(["sweep", "--ports", "1-100", "--verbose"], inNamespace: true)
        #expect(run.stderr.contains("window"))
        #expect(run.stderr.contains("RLIMIT_NOFILE"))
    }
}

/// A real firewall between the two ends: nftables in the test's own namespace.
@Suite(.enabled(if: Portsweep.canMakeNamespaces && FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft"),
                "needs root, unshare, ip and nft"))
struct FirewallSweepTests {
    static func ruleset(_ rules: String) -> String {
        "nft -f - <<'RULES'\ntable inet portsweep_test {\n  chain input {\n    type filter hook input priority 0; policy accept;\n\(rules)\n  }\n}\nRULES\n"
    }

    @Test func droppedSYNsFailWithoutStallingTheSweep() throws {
        let start = ContinuousClock.now
        let run = try Portsweep.run(["sweep", "--ports", "19000-22999", "--timeout", "1", "--verbose", "--tcp-only"], inNamespace: true,
                                    setup: Self.ruleset("    tcp dport 20000-20999 drop"))
        let elapsed = ContinuousClock.now - start
        #expect(run.lines == ["[PASS] 19000-19999", "[FAIL] 20000-20999 (ETIMEDOUT)", "[PASS] 21000-22999"],
                "stderr: \(run.stderr)")
        #expect(run.status == 1)
        // 1,000 dropped ports with a 1 s timeout: waiting ports leave the window, so this takes about one timeout,
        // not one per port (or per window of 512).
        print("1,000 dropped of 4,000 ports, 1 s timeout: \(elapsed)")
        #expect(elapsed < .seconds(8))
    }

    @Test func resetSYNsFailFast() throws {
        let run = try Portsweep.run(["sweep", "--ports", "30000-30999", "--timeout", "5", "-v", "--tcp-only"], inNamespace: true,
                                    setup: Self.ruleset("    tcp dport 30100-30199 reject with tcp reset"))
        #expect(run.lines == ["[PASS] 30000-30099", "[FAIL] 30100-30199 (ECONNREFUSED)", "[PASS] 30200-30999"],
                "stderr: \(run.stderr)")
        #expect(run.status == 1)
    }
}
