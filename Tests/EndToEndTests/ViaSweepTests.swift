import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `sweep --via`: inbound, through a checker on the internet host, across the home router's masquerade and
/// whole-range port forward, with the ISP's inbound blocks on the router. Every port's verdict is checked.
@Suite(.enabled(if: HomeNetwork.available, "needs root, ip and nft"), .serialized)
struct ViaSweepTests {
    static let checkerURL = "http://\(HomeNetwork.internetAddress):8000"

    /// The ISP's filter of the way in (what the internet sends to the client), and of the replies out.
    static let rules = [
        "in tcp dport 2100-2199 drop",
        "in tcp dport 2200-2299 reject with tcp reset",
        "in udp dport 2300-2399 drop",
        "in udp dport 2400-2499 reject",
        // The checker's line dropped on the way in (the handshake, 60 bytes at most, passes)...
        "in tcp dport 2500-2599 ip length > 60 drop",
        // ...and the listener's answer on the way out.
        "out tcp sport 2600-2699 ip length > 60 drop",
        "out udp sport 2600-2699 drop",
    ]

    /// 2999 is held on the client by another program (TCP and UDP).
    static func expected(_ port: Int, _ proto: String) -> String {
        switch (port, proto) {
        case (2100...2199, "TCP"): "FAIL ETIMEDOUT"
        case (2200...2299, "TCP"): "FAIL ECONNREFUSED"
        case (2300...2399, "UDP"): "SEND ETIMEDOUT"
        case (2400...2499, "UDP"): "SEND ECONNREFUSED"
        case (2500...2599, "TCP"): "SEND ETIMEDOUT"
        case (2600...2699, _): "RECV ETIMEDOUT"
        case (2999, _): "USED EADDRINUSE"
        default: "PASS"
        }
    }

    static func checker(_ network: HomeNetwork, _ extra: [String] = []) throws -> ListenProcess {
        let serve = try ListenProcess(["--listen", "\(HomeNetwork.internetAddress):8000"] + extra,
                                      launcher: HomeNetwork.launcher(network.internet), subcommand: "serve")
        try #require(serve.waitForErrors("serving /check_port and /sweep"), "serve: \(serve.errors)")
        return serve
    }

    @Test func everyVerdictOfTheWayInIsExactAndARepeatPrintsTheSame() throws {
        try HomeNetwork.with { network in
            try network.isp(Self.rules)
            let serve = try Self.checker(network)
            defer { _ = serve.stop() }
            let holder = try OutboundSweepTests.foreignHolder(port: 2999, in: network.client)
            defer { OutboundSweepTests.process(holder) }

            let sweep = ["sweep", "--via", Self.checkerURL, "--ports", "2000-3000", "--timeout", "1"]
            let run = try Portsweep.run(sweep + ["--format", "json", "--no-group"], netns: network.client)
            #expect(run.status == 1, "\(run.stderr)")
            let (seen, wrong) = try HomeNetwork.verdicts(run.stdout, expected: Self.expected)
            #expect(seen == 2002)
            #expect(wrong.isEmpty, "\(wrong.prefix(20))")

            let text = try Portsweep.run(sweep, netns: network.client)
            let again = try Portsweep.run(sweep, netns: network.client)
            let shuffled = try Portsweep.run(sweep + ["--order", "random", "--seed", "11"], netns: network.client)
            #expect(text.stdout.contains("[PASS] TCP/UDP 2000-2099\n"), "\(text.stdout)")
            #expect(text.stdout.contains("[USED] TCP/UDP 2999\n"), "\(text.stdout)")
            #expect(again.stdout == text.stdout)
            #expect(shuffled.stdout == text.stdout)
        }
    }

    /// The checker's budget refuses a sweep that would exceed it: exit 2, the checker's words and wait time,
    /// every port named as untested, none reported as blocked.
    @Test func aRefusedOrVanishedCheckerIsExitTwoNamingTheUntestedPorts() throws {
        try HomeNetwork.with { network in
            let serve = try Self.checker(network, ["--bulk-tests-per-hour", "300", "--bulk-probes-per-second", "100"])
            defer { _ = serve.stop() }
            let first = try Portsweep.run(["sweep", "--via", Self.checkerURL, "--ports", "2000-2099", "--timeout", "1"],
                                          netns: network.client)
            #expect(first.status == 0, "\(first.stdout)\(first.stderr)")
            let refused = try Portsweep.run(["sweep", "--via", Self.checkerURL, "--ports", "2000-2099", "--timeout", "1"],
                                            netns: network.client)
            #expect(refused.status == 2)
            #expect(refused.stdout.isEmpty, "\(refused.stdout)")
            #expect(refused.stderr.contains("refused the sweep: Too many requests. Please wait. (wait "), "\(refused.stderr)")
            #expect(refused.stderr.contains("left untested: TCP 2000-2099, UDP 2000-2099"), "\(refused.stderr)")

            // 100 probes a second: killed as the first verdicts come out (UDP 3000 is probed after every TCP port,
            // a few seconds in), the checker leaves most of 800 tests untested.
            let slow = try Self.checker(network, ["--listen", "\(HomeNetwork.internetAddress):8001", "--bulk-probes-per-second", "100"])
            let sweep = try ListenProcess(["--via", "http://\(HomeNetwork.internetAddress):8001", "--ports", "3000-3399",
                                           "--timeout", "1", "--no-group"],
                                          launcher: HomeNetwork.launcher(network.client), subcommand: "sweep")
            // Killed once it has made a hundred probes (its /metrics says so; the sweep's own output is a pipe,
            // written in large blocks).
            let deadline = ContinuousClock.now + .seconds(20)
            while Self.probesMade(network, port: 8001) < 100 && ContinuousClock.now < deadline { usleep(20_000) }
            _ = slow.stop(SIGKILL)
            #expect(sweep.stop(0) == 2, "\(sweep.errors)")
            #expect(sweep.errors.contains("the checker at http://\(HomeNetwork.internetAddress):8001 went away"), "\(sweep.errors)")
            #expect(sweep.errors.contains("left untested: "), "\(sweep.errors)")
            #expect(!sweep.log.contains("FAIL") && !sweep.log.contains("SEND"), "\(sweep.log)")
            #expect(!sweep.errors.contains("800 PASS"), "\(sweep.errors)")
        }
    }

    /// The checker, named by a host name, goes away mid-sweep: exit 2, the ports left named. Back again, the
    /// same command finishes with `--resume`, and prints what an uninterrupted sweep prints; each verdict is
    /// in the results file once.
    @Test func aSweepResumedAfterTheCheckerWentAwayPrintsWhatAnUninterruptedOneDoes() throws {
        try HomeNetwork.with { network in
            try network.isp(Self.rules)
            try network.hosts("\(HomeNetwork.internetAddress) checker.example\n")
            let results = NSTemporaryDirectory() + "portsweep-via-resume-\(UUID().uuidString).jsonl"
            defer { unlink(results) }
            let sweep = ["--via", "http://checker.example:8001", "--ports", "2550-2749", "--timeout", "1", "--resume", results]

            let slow = try Self.checker(network, ["--listen", "\(HomeNetwork.internetAddress):8001", "--bulk-probes-per-second", "100"])
            let first = try ListenProcess(sweep, launcher: HomeNetwork.launcher(network.client), subcommand: "sweep")
            let deadline = ContinuousClock.now + .seconds(20)
            while Self.probesMade(network, port: 8001) < 100 && ContinuousClock.now < deadline { usleep(20_000) }
            _ = slow.stop(SIGKILL)
            #expect(first.stop(0) == 2, "\(first.errors)")
            #expect(first.errors.contains("the checker at http://checker.example:8001 went away"), "\(first.errors)")
            let kept = OutboundSweepTests.lines(results)
            #expect(kept > 0 && kept < 400, "\(kept) verdicts kept")

            let back = try Self.checker(network, ["--listen", "\(HomeNetwork.internetAddress):8001"])
            defer { _ = back.stop() }
            let resumed = try Portsweep.run(["sweep"] + sweep, netns: network.client)
            #expect(resumed.status == 1, "\(resumed.stderr)")
            let whole = try Portsweep.run(["sweep", "--via", "http://checker.example:8001", "--ports", "2550-2749", "--timeout", "1"],
                                          netns: network.client)
            #expect(resumed.stdout == whole.stdout)
            #expect(whole.stdout.contains("[SEND] TCP 2550-2599\n"), "\(whole.stdout)")
            #expect(OutboundSweepTests.lines(results) == 400)
        }
    }

    /// A third host cannot point the checker at the client: `X-Forwarded-For` from a peer that is not a trusted
    /// proxy changes nothing, and a request naming another address is refused.
    @Test func aThirdHostCannotSweepTheClient() throws {
        try HomeNetwork.with { network in
            let serve = try Self.checker(network)
            defer { _ = serve.stop() }
            let listener = try ListenProcess(["--ports", "4000-4009", "--reply", "echo"], launcher: HomeNetwork.launcher(network.client))
            #expect(listener.waitForLog("listening on"), "\(listener.errors)")
            defer { _ = listener.stop() }
            let body = #"{"ports":"4000-4009","protocols":["tcp","udp"],"timeout_ms":500,"token":"abcdefgh12345678""#
            let curl = HomeNetwork.launcher(network.internet) + ["/usr/bin/curl", "-sS", "--max-time", "10", "-X", "POST",
                                                                 "-H", "X-Forwarded-For: \(HomeNetwork.routerWAN)"]
            let spoofed = try Portsweep.shell(curl + ["--data", body + "}", "\(Self.checkerURL)/sweep"])
            let named = try Portsweep.shell(curl + ["--data", body + #","address":"\#(HomeNetwork.routerWAN)"}"#, "\(Self.checkerURL)/sweep"])
            // The spoofed request probed its sender, where nothing listens; the named one was refused.
            #expect(spoofed.contains(#""error":"ECONNREFUSED""#) && !spoofed.contains(#""connected":true"#), "\(spoofed)")
            #expect(named.contains("A sweep probes only your own address (\(HomeNetwork.internetAddress)), not \(HomeNetwork.routerWAN)"), "\(named)")
            // Nothing reached the client's listener.
            #expect(listener.stop() == 0)
            #expect(!listener.log.contains(" TCP 400") && !listener.log.contains(" UDP 400"), "\(listener.log)")
        }
    }

    /// The checker's `portsweep_bulk_probes_total`, both protocols.
    static func probesMade(_ network: HomeNetwork, port: Int) -> Int {
        let text = (try? Portsweep.shell(HomeNetwork.launcher(network.internet) + ["/usr/bin/curl", "-sS", "--max-time", "5",
                                                                            "http://\(HomeNetwork.internetAddress):\(port)/metrics"])) ?? ""
        return text.split(separator: "\n").filter { $0.hasPrefix("portsweep_bulk_probes_total{") }
            .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0) { $0 + Int($1) }
    }
}
