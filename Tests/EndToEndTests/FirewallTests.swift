import Foundation
import Testing

extension EndToEnd {
/// The verdicts against a real firewall: nftables rules between client and listener, on one host (loopback) and
/// across a veth pair through a router that forwards the ports back (see `TestNetwork`). Every scenario asserts
/// the exact grouped output and exit status, and prints its elapsed time.
@Suite(.enabled(if: TestNetwork.available, "needs root, ip and nft"), .serialized)
struct FirewallTests {
    /// Sweeps `ports` with `rules` loaded; checks the output line for line and the exit status.
    @discardableResult
    static func scenario(_ name: String, _ kind: TestNetwork.Kind, rules: [String], arguments: [String],
                         expect expected: [String], status: Int32 = 1, holdingTCP: [UInt16] = [], holdingUDP: [UInt16] = [],
                         sourceLocation: SourceLocation = #_sourceLocation) throws -> Duration {
        try TestNetwork.with(kind) { network in
            try network.firewall(rules)
            let (run, elapsed) = try network.sweep(["--quiet"] + arguments, holdingTCP: holdingTCP, holdingUDP: holdingUDP)
            print("[\(kind)] \(name): \(elapsed)")
            expectLines(run.lines, expected, "[\(kind)] \(name) (stderr: \(run.stderr))", sourceLocation: sourceLocation)
            #expect(run.status == status, "[\(kind)] \(name): exit status", sourceLocation: sourceLocation)
            return elapsed
        }
    }

    @Test(arguments: TestNetwork.Kind.allCases)
    func droppedSYNsFailOnExactlyThatRangeWithoutStalling(kind: TestNetwork.Kind) throws {
        let elapsed = try Self.scenario(
            "TCP SYN dropped", kind, rules: ["tcp dport 20100-20899 drop"],
            arguments: ["--ports", "20000-20999", "--tcp-only", "--timeout", "1"],
            expect: ["[PASS] 20000-20099", "[FAIL] 20100-20899", "[PASS] 20900-20999"])
        // 800 ports that never answer, 1 s timeout: waiting ports leave the window, so about one timeout in all.
        #expect(elapsed < .seconds(5))
    }

    @Test(arguments: TestNetwork.Kind.allCases)
    func resetSYNsFailFast(kind: TestNetwork.Kind) throws {
        let elapsed = try Self.scenario(
            "TCP reset", kind, rules: ["tcp dport 21100-21199 reject with tcp reset"],
            arguments: ["--ports", "21000-21299", "--tcp-only", "--timeout", "10", "--verbose"],
            expect: ["[PASS] 21000-21099", "[FAIL] 21100-21199 (ECONNREFUSED)", "[PASS] 21200-21299"])
        #expect(elapsed < .seconds(5), "a reset must not wait for the 10 s timeout")
    }

    @Test(arguments: TestNetwork.Kind.allCases)
    func droppedDataIsSendAndDroppedReplyIsRecv(kind: TestNetwork.Kind) throws {
        // Handshakes get through; packets carrying data (IPv4 length above 64 bytes) do not.
        try Self.scenario(
            "TCP data dropped", kind,
            rules: ["tcp dport 22010-22019 ip length > 64 drop", "tcp sport 22030-22039 ip length > 64 drop"],
            arguments: ["--ports", "22000-22049", "--tcp-only", "--timeout", "1"],
            expect: ["[PASS] 22000-22009", "[SEND] 22010-22019", "[PASS] 22020-22029", "[RECV] 22030-22039",
                     "[PASS] 22040-22049"])
    }

    @Test(arguments: TestNetwork.Kind.allCases)
    func udpDroppedRejectedAndReplyDropped(kind: TestNetwork.Kind) throws {
        try Self.scenario(
            "UDP drop / reject / reply drop", kind,
            rules: ["udp dport 23010-23019 drop", "udp dport 23030-23039 reject", "udp sport 23050-23059 drop"],
            arguments: ["--ports", "23000-23069", "--udp-only", "--timeout", "1", "--verbose"],
            expect: ["[PASS] 23000-23009", "[SEND] 23010-23019 (ETIMEDOUT)", "[PASS] 23020-23029",
                     "[SEND] 23030-23039 (ECONNREFUSED)", "[PASS] 23040-23049", "[RECV] 23050-23059 (ETIMEDOUT)",
                     "[PASS] 23060-23069"])
    }

    @Test(arguments: TestNetwork.Kind.allCases)
    func portsHeldByAnotherProcessAreUsedNeverFail(kind: TestNetwork.Kind) throws {
        try Self.scenario(
            "held ports", kind, rules: [],
            arguments: ["--ports", "24000-24010", "--timeout", "1"],
            expect: ["[PASS] TCP/UDP 24000-24004", "[USED] TCP/UDP 24005", "[USED] TCP 24006", "[PASS] UDP 24006",
                     "[PASS] TCP 24007", "[USED] UDP 24007", "[PASS] TCP/UDP 24008-24010"],
            holdingTCP: [24005, 24006], holdingUDP: [24005, 24007])
    }

    /// Rules of every kind over interleaved ranges, one sweep of 1-65535 over TCP and UDP.
    static let mixedRules = [
        "tcp dport 1000-1999 drop",
        "udp dport 1500-2499 drop",
        "tcp dport 3000-3099 reject with tcp reset",
        "udp dport 3050-3149 reject",
        "tcp dport 5000-5049 ip length > 64 drop",
        "tcp sport 5100-5149 ip length > 64 drop",
        "udp sport 5125-5174 drop",
    ]

    static let mixedExpected = [
        "[PASS] TCP/UDP 1-999",
        "[FAIL] TCP 1000-1499", "[PASS] UDP 1000-1499",
        "[FAIL] TCP 1500-1999", "[SEND] UDP 1500-1999",
        "[PASS] TCP 2000-2499", "[SEND] UDP 2000-2499",
        "[PASS] TCP/UDP 2500-2999",
        "[FAIL] TCP 3000-3049", "[PASS] UDP 3000-3049",
        "[FAIL] TCP 3050-3099", "[SEND] UDP 3050-3099",
        "[PASS] TCP 3100-3149", "[SEND] UDP 3100-3149",
        "[PASS] TCP/UDP 3150-4999",
        "[SEND] TCP 5000-5049", "[PASS] UDP 5000-5049",
        "[PASS] TCP/UDP 5050-5099",
        "[RECV] TCP 5100-5124", "[PASS] UDP 5100-5124",
        "[RECV] TCP/UDP 5125-5149",
        "[PASS] TCP 5150-5174", "[RECV] UDP 5150-5174",
        "[PASS] TCP/UDP 5175-5999",
        "[USED] TCP/UDP 6000",
        "[USED] TCP 6001", "[PASS] UDP 6001",
        "[PASS] TCP/UDP 6002-65535",
    ]

    @Test(arguments: TestNetwork.Kind.allCases)
    func mixedRulesOverTheFullRangeFiveTimesAlike(kind: TestNetwork.Kind) throws {
        for round in 1...5 {
            try Self.scenario(
                "mixed full range, round \(round)", kind, rules: Self.mixedRules,
                arguments: ["--ports", "-", "--timeout", "1"], expect: Self.mixedExpected,
                holdingTCP: [6000, 6001], holdingUDP: [6000])
        }
    }

    @Test(arguments: TestNetwork.Kind.allCases)
    func tenThousandDroppedPortsOfAFullSweepInUnderTenSeconds(kind: TestNetwork.Kind) throws {
        let elapsed = try Self.scenario(
            "full range, 10,000 ports dropped", kind, rules: ["tcp dport 10000-19999 drop", "udp dport 10000-19999 drop"],
            arguments: ["--ports", "-", "--timeout", "1"],
            expect: ["[PASS] TCP/UDP 1-9999", "[FAIL] TCP 10000-19999", "[SEND] UDP 10000-19999", "[PASS] TCP/UDP 20000-65535"])
        #expect(elapsed < .seconds(10))
    }
}
}
