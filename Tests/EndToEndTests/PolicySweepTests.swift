import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing

extension EndToEnd {
/// `sweep --expect` against a namespace's real firewall: the exit status says whether reality matched, only the
/// deviations are printed, the ports tested are the policy's, and `--format junit` is XML CI systems read.
@Suite(.enabled(if: Portsweep.canMakeNamespaces && FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft"), "needs root and nft"))
struct PolicySweepTests {
    static let firewall = """
        nft add table inet t
        nft add chain inet t input '{ type filter hook input priority 0; }'
        nft add rule inet t input tcp dport 2100-2149 drop
        nft add rule inet t input tcp dport 2205 drop
        nft add rule inet t input udp dport 2207 reject
        """

    @Test func realityMatchingThePolicyIsExitZeroAndPrintsNothing() throws {
        let run = try Portsweep.run(["sweep", "--timeout", "0.5", "--expect", "tcp 2000-2099 pass",
                                     "--expect", "tcp 2100-2149 blocked", "--expect", "udp 2207 SEND", "--expect", "tcp 2205 FAIL"],
                                    inNamespace: true, setup: Self.firewall)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout == "", "\(run.stdout)")
        // Only the ports the policy names, for the protocols it names (TCP and UDP: each pair not named is counted).
        #expect(run.stderr.contains("152 ports, TCP and UDP (304 tests)"), "\(run.stderr)")
        #expect(run.stderr.contains("portsweep: policy: 152 tests match, 0 deviate; 152 not named by any rule"), "\(run.stderr)")
    }

    @Test func deviationsAreListedObservedFirstAndExitOne() throws {
        let policy = FileManager.default.temporaryDirectory.appendingPathComponent("policy-\(UUID().uuidString).yaml")
        try """
            # what the firewall should do
            - tcp 2000-2099 pass
            - ports: 2100-2199
              protocols: tcp
              expect: blocked
            - ports: 2200-2210
              protocols: [tcp, udp]
              expect: pass
            """.write(to: policy, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: policy) }
        let run = try Portsweep.run(["sweep", "--timeout", "0.5", "--expect", policy.path], inNamespace: true, setup: Self.firewall)
        #expect(run.status == 1, "\(run.stderr)")
        #expect(run.stdout == "[PASS, expected blocked] TCP 2150-2199\n[FAIL, expected PASS] TCP 2205\n[SEND, expected PASS] UDP 2207\n",
                "\(run.stdout)")
        #expect(run.stderr.contains("policy: 170 tests match, 52 deviate (3 groups); 200 not named by any rule"), "\(run.stderr)")

        let junit = try Portsweep.run(["sweep", "--timeout", "0.5", "--expect", policy.path, "--format", "junit", "-q"],
                                      inNamespace: true, setup: Self.firewall)
        #expect(junit.status == 1)
        let document = try XMLDocument(data: Data(junit.stdout.utf8))
        let suites = try #require(document.rootElement())
        #expect(suites.name == "testsuites" && suites.attribute(forName: "tests")?.stringValue == "3"
                && suites.attribute(forName: "failures")?.stringValue == "2", "\(junit.stdout)")
        let suite = try #require(suites.elements(forName: "testsuite").first)
        #expect(Double(suite.attribute(forName: "time")?.stringValue ?? "") ?? 0 > 0.4, "the sweep waited out its drops")
        let failures = suite.elements(forName: "testcase").map { $0.elements(forName: "failure").first?.attribute(forName: "message")?.stringValue }
        #expect(failures == [nil, "50 of 100 tests deviate from 'tcp 2100-2199 blocked'", "2 of 22 tests deviate from 'tcp,udp 2200-2210 pass'"])
    }

    @Test func aBadRuleIsOneLineAndExit64() throws {
        let run = try Portsweep.run(["sweep", "--expect", "udp 53 fail"])
        #expect(run.status == 64)
        #expect(run.stderr == "portsweep: invalid --expect 'udp 53 fail': UDP has no FAIL (a datagram needs no connection): use SEND, RECV, blocked or a TCP rule\n", "\(run.stderr)")
    }
}
}
