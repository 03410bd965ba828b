import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `sweep --to`: the way out, across a home router to a remote `listen --reply echo`, with the ISP's blocks on
/// the router. Every port's verdict is checked.
@Suite(.enabled(if: HomeNetwork.available, "needs root, ip and nft"), .serialized)
struct OutboundSweepTests {
    /// The ISP's filter of the way out, and what each block must come to.
    static let rules = [
        "out tcp dport 2100-2199 drop",
        "out tcp dport 2200-2299 reject with tcp reset",
        "out udp dport 2300-2399 drop",
        "out udp dport 2400-2499 reject",
        // Data dropped on the way out (the handshake, 60 bytes at most, passes), and replies on the way in.
        "out tcp dport 2500-2599 ip length > 60 drop",
        "in tcp sport 2600-2699 ip length > 60 drop",
        "in udp sport 2600-2699 drop",
    ]

    /// `port 2999` is held on the far host by another program that answers something else, so the listener
    /// there could not take it; 3000 is outside its range. Both are said as the listener's roster tells them.
    static func expected(_ port: Int, _ proto: String) -> String {
        switch (port, proto) {
        case (2100...2199, "TCP"): "FAIL ETIMEDOUT"
        case (2200...2299, "TCP"): "FAIL ECONNREFUSED"
        case (2300...2399, "UDP"): "RECV ETIMEDOUT"
        case (2400...2499, "UDP"): "SEND ECONNREFUSED"
        case (2500...2599, "TCP"), (2600...2699, _): "RECV ETIMEDOUT"
        case (2999, _): "USED EADDRINUSE"
        case (3000, _): "ERRO EADDRNOTAVAIL"
        default: "PASS"
        }
    }

    /// The far host: a listener on 2000-2998 (and 2999, taken by another program first).
    static func farEnd(_ network: HomeNetwork, ports: String = "2000-2999", launcher: [String] = []) throws -> (ListenProcess, TestProcess) {
        let foreign = try Self.foreignHolder(port: 2999, in: network.internet)
        var started = false
        defer { if !started { process(foreign) } }
        let listener = try ListenProcess(["--ports", ports, "--reply", "echo", "--udp-reply-rate", "0", "--max-connections", "100000", "--max-per-port", "100000"],
                                         launcher: HomeNetwork.launcher(network.internet) + launcher)
        try #require(listener.waitForLog("listening on"), "listen: \(listener.errors)")
        started = true
        return (listener, foreign)
    }

    @Test func everyVerdictOfTheWayOutIsExact() throws {
        try HomeNetwork.with { network in
            try network.isp(Self.rules)
            let (listener, foreign) = try Self.farEnd(network)
            defer { _ = listener.stop(); Self.process(foreign) }

            let run = try Portsweep.run(["sweep", "--to", HomeNetwork.internetAddress, "--ports", "2000-3000", "--timeout", "1",
                                         "--format", "json", "--no-group"], netns: network.client)
            #expect(run.status == 1, "\(run.stderr)")
            let (seen, wrong) = try HomeNetwork.verdicts(run.stdout, expected: Self.expected)
            #expect(seen == 2002)
            #expect(wrong.isEmpty, "\(wrong.prefix(20))")
        }
    }

    /// A far listen spread over worker processes (1,000 descriptors each: three of them) still tells the whole
    /// listen's roster, from whichever worker is asked: ports outside its range and the one another program
    /// holds are said as such, never as blocked, and nothing else changes. The far host is named by a host name.
    @Test func portsTheFarListenerDoesNotHoldAreSaidSoAcrossItsWorkers() throws {
        try HomeNetwork.with { network in
            let (listener, foreign) = try Self.farEnd(network, launcher: ["/usr/bin/prlimit", "--nofile=1000:1000"])
            defer { _ = listener.stop(); Self.process(foreign) }
            #expect(listener.log.contains("worker processes"), "\(listener.log)")
            try network.hosts("\(HomeNetwork.internetAddress) far.example\n")

            let run = try Portsweep.run(["sweep", "--to", "far.example", "--ports", "1990-3009", "--timeout", "1",
                                         "--concurrency", "100",  // within a worker's room for connections
                                         "--format", "json", "--no-group"], netns: network.client)
            #expect(run.status == 1, "\(run.stderr)")
            let (seen, wrong) = try HomeNetwork.verdicts(run.stdout) { port, _ in
                switch port {
                case 2999: "USED EADDRINUSE"
                case 2000...2998: "PASS"
                default: "ERRO EADDRNOTAVAIL"
                }
            }
            #expect(seen == 2 * 1020)
            #expect(wrong.isEmpty, "\(wrong.prefix(20))")
            #expect(run.stderr.contains("does not hold TCP 1990-1999,2999-3009"), "\(run.stderr)")
            #expect(run.stderr.contains("does not hold UDP 1990-1999,2999-3009"), "\(run.stderr)")
        }
    }

    /// With no roster (the far end is not a portsweep listen), the sweep says so once and tests every port.
    @Test func withoutARosterTheSweepSaysWhatARefusalMayMean() throws {
        try HomeNetwork.with { network in
            let run = try Portsweep.run(["sweep", "--to", HomeNetwork.internetAddress, "--ports", "2000-2009", "--tcp-only",
                                         "--timeout", "1", "--format", "json", "--no-group"], netns: network.client)
            #expect(run.status == 1, "\(run.stderr)")
            let (seen, wrong) = try HomeNetwork.verdicts(run.stdout) { _, _ in "FAIL ECONNREFUSED" }
            #expect(seen == 10 && wrong.isEmpty, "\(wrong)")
            #expect(run.stderr.contains("did not say which ports it holds"), "\(run.stderr)")
        }
    }

    /// The same sweep twice, and once in random order: byte-identical output. Then interrupted and resumed: the
    /// same output again, and each port in the results file once.
    @Test func repeatedRandomAndResumedSweepsPrintTheSame() throws {
        try HomeNetwork.with { network in
            try network.isp(Self.rules)
            let (listener, foreign) = try Self.farEnd(network)
            defer { _ = listener.stop(); Self.process(foreign) }
            let sweep = ["sweep", "--to", HomeNetwork.internetAddress, "--ports", "2000-3000", "--timeout", "1"]

            let first = try Portsweep.run(sweep, netns: network.client)
            let again = try Portsweep.run(sweep, netns: network.client)
            let shuffled = try Portsweep.run(sweep + ["--order", "random", "--seed", "7"], netns: network.client)
            #expect(first.status == 1 && first.stdout.contains("[PASS] TCP/UDP 2000-2099"), "\(first.stdout)\(first.stderr)")
            #expect(again.stdout == first.stdout)
            #expect(shuffled.stdout == first.stdout)
            #expect(shuffled.stderr.contains("--order random --seed 7"))

            let file = NSTemporaryDirectory() + "portsweep-resume-\(UUID().uuidString).jsonl"
            defer { unlink(file) }
            // Slow enough to be stopped halfway: 2002 tests at 400/s take five seconds.
            let interrupted = try ListenProcess(Array(sweep.dropFirst()) + ["--resume", file, "--rate", "400"],
                                                launcher: HomeNetwork.launcher(network.client), subcommand: "sweep")
            let deadline = ContinuousClock.now + .seconds(20)
            while Self.lines(file) < 300 && ContinuousClock.now < deadline && interrupted.process.isRunning { usleep(10_000) }
            #expect(interrupted.stop(SIGINT) == 130, "\(interrupted.errors)")
            let partial = Self.lines(file)
            #expect(partial >= 300 && partial < 2002, "\(partial) records after the interruption")

            let resumed = try Portsweep.run(sweep + ["--resume", file], netns: network.client)
            #expect(resumed.stdout == first.stdout, "\(resumed.stderr)")
            #expect(resumed.status == 1)
            let records = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")
            let keys = try records.map { line -> String in
                let record = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                return "\(record["protocol"]!) \(record["port"]!)"
            }
            #expect(keys.count == 2002 && Set(keys).count == 2002, "\(keys.count) records, \(Set(keys).count) distinct")

            // Nothing left to test: the whole output again, at once.
            let done = try Portsweep.run(sweep + ["--resume", file], netns: network.client)
            #expect(done.stdout == first.stdout)
        }
    }

    /// `--rate` is a ceiling over every loop: 600 tests at 400/s cannot take less than 1.4 s (the burst allows
    /// 50 ms of tests at once).
    @Test func theRateIsACeilingOverAllLoops() throws {
        try HomeNetwork.with { network in
            let (listener, foreign) = try Self.farEnd(network)
            defer { _ = listener.stop(); Self.process(foreign) }
            let start = ContinuousClock.now
            let run = try Portsweep.run(["sweep", "--to", HomeNetwork.internetAddress, "--ports", "2000-2299", "--rate", "400"],
                                        netns: network.client)
            let elapsed = ContinuousClock.now - start
            #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
            #expect(elapsed >= .milliseconds(1400), "\(elapsed)")
        }
    }

    /// SIGKILL: the helper is started from a test's worker thread and may have SIGTERM blocked (see below).
    static func process(_ foreign: TestProcess) {
        if foreign.isRunning { kill(foreign.processIdentifier, SIGKILL) }
        foreign.waitUntilExit()
    }

    static func lines(_ path: String) -> Int {
        guard let data = FileManager.default.contents(atPath: path) else { return 0 }
        return data.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
    }

    /// Another program on the far host, holding `port` (TCP and UDP) and answering something that is not an echo.
    static func foreignHolder(port: Int, in namespace: String) throws -> TestProcess {
        let ready = NSTemporaryDirectory() + "portsweep-foreign-\(UUID().uuidString)"
        defer { unlink(ready) }
        let process = TestProcess()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", namespace, "/usr/bin/python3", "-c", """
            import signal, socket, sys, threading
            signal.pthread_sigmask(signal.SIG_SETMASK, [])  # started from a dispatch thread, which blocks them all
            t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", \(port))); t.listen(64)
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", \(port)))
            def answer():
                while True:
                    c, _ = t.accept(); c.sendall(b"SSH-2.0-OpenSSH_9.2\\r\\n"); c.close()
            threading.Thread(target=answer, daemon=True).start()
            open("\(ready)", "w").write("ready")
            while True:
                data, peer = u.recvfrom(2048); u.sendto(b"not an echo", peer)
            """]
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = ContinuousClock.now + .seconds(10)
        while !FileManager.default.fileExists(atPath: ready) && process.isRunning && ContinuousClock.now < deadline { usleep(5_000) }
        try #require(FileManager.default.fileExists(atPath: ready), "the foreign holder did not start")
        return process
    }
}
