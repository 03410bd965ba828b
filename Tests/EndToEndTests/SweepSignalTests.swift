import Foundation
import Testing

extension EndToEnd {
/// `portsweep sweep` stopped short, starved of descriptors, aimed where there is no route: never a trap, never a
/// result lost or cut in half, always one line that says what happened.
@Suite struct SweepSignalTests {
    /// A sweep of 1-65535 that takes ten seconds (a firewall drops 20000-32000, timeout 10 s), its stdout a pipe.
    static func longSweep(_ format: String, in network: TestNetwork) throws -> ListenProcess {
        // Below the ephemeral range (32768-60999): the clients' own ports must not be dropped.
        try network.firewall(["tcp dport 20000-32000 drop", "udp dport 20000-32000 drop"])
        // One line per port, so lines flow out (in 64 KiB writes to a pipe) while ports wait out their timeout.
        return try ListenProcess(["--ports", "-", "--timeout", "10", "--format", format, "--no-group"],
                                 launcher: ["/usr/sbin/ip", "netns", "exec", network.near], subcommand: "sweep")
    }

    @Test(.enabled(if: TestNetwork.available, "needs root, ip and nft"),
          arguments: [(SIGINT, Int32(130), "SIGINT"), (SIGTERM, Int32(143), "SIGTERM")])
    func aSignalStopsTheSweepAndKeepsEveryResult(signal: Int32, status: Int32, name: String) throws {
        try TestNetwork.with(.loopback) { network in
            let sweep = try Self.longSweep("json", in: network)
            #expect(sweep.waitForLog("\"result\":\"PASS\""), "\(sweep.errors)")
            let stopped = sweep.stop(signal)
            #expect(stopped == status, "exit status after \(name): \(stopped) \(sweep.errors)")
            // Every line whole: each one a JSON record; the ports before the firewall's range all there.
            let records = sweep.logLines.map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            #expect(!records.isEmpty && records.allSatisfy { $0 != nil }, "\(sweep.log.suffix(300))")
            let last = sweep.logLines.last ?? ""
            #expect(last.hasSuffix("}"), "last line: \(last)")
            let summary = sweep.errors.split(separator: "\n").last.map(String.init) ?? ""
            #expect(summary.hasPrefix("portsweep: interrupted by \(name): "), "\(sweep.errors)")
            #expect(summary.contains(" left untested,"), "\(summary)")
            // What the summary counts is what was printed: tests in the records' ranges.
            let printed = records.compactMap { $0 }.filter { $0["port"] is Int }.count
            let done = summary.split(separator: " ").dropFirst(4).first.flatMap { Int($0) } ?? -1
            #expect(printed == done, "printed \(printed) tests, summary: \(summary)")
        }
    }

    @Test(.enabled(if: TestNetwork.available, "needs root, ip and nft"))
    func textGoesOutWholeToo() throws {
        try TestNetwork.with(.loopback) { network in
            let sweep = try Self.longSweep("text", in: network)
            #expect(sweep.waitForLog("[PASS] "), "\(sweep.errors)")
            #expect(sweep.stop(SIGINT) == 130)
            #expect(sweep.log.hasSuffix("\n") && sweep.logLines.allSatisfy { $0.hasPrefix("[PASS] ") || $0.hasPrefix("[FAIL] ") || $0.hasPrefix("[SEND] ") },
                    "\(sweep.log.suffix(300))")
            #expect(sweep.log.hasPrefix("[PASS] TCP 1\n[PASS] UDP 1\n"), "\(sweep.log.prefix(200))")
        }
    }

    @Test(.enabled(if: Portsweep.canMakeNamespaces, "needs root and unshare"),
          arguments: [["sweep", "--ports", "1-500"], ["listen", "--ports", "40000-40200"], ["serve", "--listen", "127.0.0.1:40300"]])
    func tooFewDescriptorsNeverTrap(command: [String]) throws {
        for limit in [16, 32, 36, 48, 64] {
            // listen and serve would run until told to stop: a watchdog in the shell sends SIGTERM after 2 s.
            let script = "ip link set lo up; /usr/bin/prlimit --nofile=\(limit):\(limit) \(Portsweep.binary) \(command.joined(separator: " ")) & pid=$!; (sleep 2; kill -TERM $pid 2>/dev/null) & wait $pid; echo \"status=$?\""
            let run = try Portsweep.run([], wrapper: ["/usr/bin/unshare", "-n", "/bin/sh", "-c", script, "sh"])
            let status = run.stdout.split(separator: "\n").last { $0.hasPrefix("status=") }.flatMap { Int($0.dropFirst(7)) } ?? -1
            // 0/1 it ran with what it had, 2 a local problem said in one line naming RLIMIT_NOFILE; never a
            // signal (a trap is SIGILL or SIGABRT: 132, 134).
            #expect([0, 1, 2].contains(status), "\(command[0]) with RLIMIT_NOFILE \(limit): status \(status), \(run.stderr)")
            if status == 2 {
                #expect(run.stderr.contains("RLIMIT_NOFILE"), "\(command[0]) with \(limit): \(run.stderr)")
            }
        }
    }

    @Test(.enabled(if: Portsweep.canMakeNamespaces, "needs root and unshare"), arguments: ["--tcp-only", "--udp-only"])
    func aTargetWithNoRouteIsALocalProblemSaidAtOnce(proto: String) throws {
        let start = ContinuousClock.now
        let run = try Portsweep.run(["sweep", "--ports", "1-100", "--target", "198.18.0.99", proto], inNamespace: true)
        #expect(run.status == 2, "\(run.stderr)")
        #expect(run.stdout.isEmpty)
        #expect(run.errorLines.last == "portsweep: local problem: this machine has no route to 198.18.0.99 (ENETUNREACH); check the address and the routes",
                "\(run.stderr)")
        #expect(ContinuousClock.now - start < .seconds(3), "said at once, not after the timeout")
    }

    @Test(.enabled(if: Portsweep.canMakeNamespaces, "needs root and unshare"))
    func usedNamesTheHolderInVerboseOutput() throws {
        let run = try Portsweep.run(["sweep", "--ports", "24000-24002", "--tcp-only", "--verbose", "-q"], inNamespace: true,
                                    setup: Portsweep.holding(tcp: [24001]))
        #expect(run.lines.contains { $0.hasPrefix("[USED] 24001 (EADDRINUSE, held by python3, pid ") }, "\(run.lines)")
    }
}
}
