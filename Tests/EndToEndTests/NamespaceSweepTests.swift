import Foundation
import Testing

extension EndToEnd {
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

    @Test func runningOutOfDescriptorsShrinksTheWindowAndIsNeverAVerdict() throws {
        // Planned as if 100,000 descriptors were there, run with 1,000: sockets, accepts and the UDP client meet
        // EMFILE mid-sweep. Every port must still get its real verdict.
        let run = try Portsweep.run(
            ["sweep", "--ports", "1-20000", "--assume-descriptor-limit", "100000", "--concurrency", "20000", "-q"],
            inNamespace: true, wrapper: ["/usr/bin/prlimit", "--nofile=1000:1000"])
        #expect(run.lines == ["[PASS] TCP/UDP 1-20000"], "stderr: \(run.stderr)")
        #expect(run.status == 0)
    }

    @Test func verboseShowsTheWindow() throws {
        let run = try Portsweep.run(["sweep", "--ports", "1-100", "--verbose"], inNamespace: true)
        #expect(run.stderr.contains("window"))
        #expect(run.stderr.contains("RLIMIT_NOFILE"))
    }
}
}
