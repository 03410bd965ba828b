import Foundation
import Testing

extension EndToEnd {
/// The `portsweep sweep` command as users and scripts meet it: its output, exit statuses and errors.
@Suite struct CommandLineTests {
    @Test(arguments: [
        (["--ports", "0"], "'0'"),
        (["--ports", "70000"], "70000"),
        (["--ports", "10-5"], "10-5"),
        (["--ports", "abc"], "abc"),
        (["--timeout", "-1"], "-1"),
        (["--timeout", "abc"], "abc"),
        (["--target", "999.1.1.1"], "999.1.1.1"),
        (["--bind", "::1", "--target", "127.0.0.1"], "::1"),
        (["--concurrency", "0"], "0"),
        (["--test-single-port", "65536"], "65536"),
        (["--format", "xml"], "xml"),
        (["--tcp-only", "--udp-only"], "--udp-only"),
        (["--bogus"], "--bogus"),
        (["--retries", "-1"], "-1"),
        (["--test-single-port", "80", "--ports", "1-100"], "--ports 1-100"),
    ])
    func badInputGetsOneLineNamingTheValueAndExit64(arguments: [String], named: String) throws {
        let run = try Portsweep.run(["sweep"] + arguments)
        #expect(run.status == 64, "exit status for \(arguments)")
        #expect(run.errorLines.count == 1, "stderr: \(run.stderr)")
        #expect(run.stderr.contains(named), "stderr: \(run.stderr)")
        #expect(run.stdout.isEmpty)
    }

    @Test func udpOnlyOmitsTheProtocolUnlessAsked() throws {
        let ports = try QuietPorts(free: 1)
        let free = ports.free[0]
        let run = try ports.run(["sweep", "--udp-only", "--ports", "\(free)", "-q"])
        #expect(run.status == 0)
        #expect(run.lines == ["[PASS] \(free)"])
        let labelled = try ports.run(["sweep", "--udp-only", "--ports", "\(free)", "-q", "--always-print-protocol"])
        #expect(labelled.lines == ["[PASS] UDP \(free)"])
    }

    @Test func mixedResultsMergeAndSplitByProtocol() throws {
        // A TCP listener held by the test: TCP says USED there, UDP passes; around it both pass.
        let ports = try QuietPorts(free: 2, held: 1, adjacent: true)
        defer { ports.close() }
        let (p, held, q) = (ports.free[0], ports.held[0], ports.free[1])
        let run = try ports.run(["sweep", "--ports", "\(p)-\(q)", "-q"])
        #expect(run.status == 1)
        #expect(run.lines == ["[PASS] TCP/UDP \(p)", "[USED] TCP \(held)", "[PASS] UDP \(held)",
                              "[PASS] TCP/UDP \(q)"], "stderr: \(run.stderr)")
    }

    @Test(.enabled(if: TestNetwork.available && Pty.available, "needs root, ip, nft and script"))
    func onATerminalTheProgressBarNeverSwallowsAResultLine() throws {
        // One port dropped, timeout 1 s: the sweep runs for a second with the bar up, and the first group is
        // known (and printed) while it is.
        try TestNetwork.with(.loopback) { network in
            try network.firewall(["tcp dport 20050 drop"])
            let run = try Portsweep.run(["sweep", "--ports", "20000-20099", "--tcp-only", "--timeout", "1"],
                                        netns: network.near, wrapper: Pty.launcher)
            #expect(run.status == 1)
            let screen = run.stdout
            #expect(screen.contains("ports/s ETA"), "no progress bar on a terminal: \(screen)")
            for line in ["[PASS] 20000-20049", "[FAIL] 20050", "[PASS] 20051-20099", "portsweep: 100 ports in"] {
                #expect(Pty.startsALine(line, in: screen), "\(line) does not start a line: \(screen.debugDescription)")
            }
        }
        // Not a terminal: no bar, no escapes.
        let piped = try Portsweep.run(["sweep", "--ports", "\(try HeldPort.freePort())", "--tcp-only"])
        #expect(!piped.stderr.contains("ETA") && !piped.stderr.contains("\u{1B}") && !piped.stdout.contains("\u{1B}"))
    }

    @Test(.enabled(if: TestNetwork.available && Pty.available, "needs root, ip, nft and script"))
    func theProgressBarCountsPortsAndItsETAWaitsForDroppedPorts() throws {
        // 99 ports pass in a moment; one dropped port waits out its 3 s timeout. The time left is that wait,
        // not the 99 fast ports' pace.
        try TestNetwork.with(.loopback) { network in
            try network.firewall(["tcp dport 20050 drop", "udp dport 20050 drop"])
            let run = try Portsweep.run(["sweep", "--ports", "20000-20099", "--timeout", "3"],
                                        netns: network.near, wrapper: Pty.launcher)
            let screen = run.stdout
            #expect(screen.contains("99/100 ports"), "progress counts ports, not tests: \(screen.suffix(400))")
            #expect(screen.range(of: #"99/100 ports [0-9,]+ ports/s ETA [12]\.[0-9] s"#, options: .regularExpression) != nil,
                    "the ETA counts the dropped port's deadline: \(screen.suffix(400))")
        }
    }

    @Test func helpExitsZero() throws {
        let run = try Portsweep.run(["sweep", "--help"])
        #expect(run.status == 0)
        #expect(run.stdout.contains("--test-single-port"))
    }

    @Test func singlePortExitStatusIsItsOutcomeBits() throws {
        let ports = try QuietPorts(free: 1, held: 1)
        defer { ports.close() }
        let free = ports.free[0]
        let pass = try ports.run(["sweep", "--test-single-port", "\(free)"])
        #expect(pass.status == 0)
        #expect(pass.stdout.isEmpty && pass.stderr.isEmpty)

        let used = try ports.run(["sweep", "--test-single-port", "\(ports.held[0])"])
        #expect(used.status == 8)  // TCP USED, UDP PASS: the bits combine
        #expect(used.stdout.isEmpty)

        // Listeners on 127.0.0.2, target 127.0.0.1: nothing answers there. TCP is refused (FAIL 1); the UDP
        // datagram draws an ICMP port unreachable (SEND 2): 1 | 2.
        let failed = try ports.run(["sweep", "--test-single-port", "\(free)", "--bind", "127.0.0.2"])
        #expect(failed.status == 3)
        let tcpOnly = try ports.run(["sweep", "--test-single-port", "\(free)", "--bind", "127.0.0.2", "--tcp-only"])
        #expect(tcpOnly.status == 1)
    }

    @Test func aHeldPortIsReportedUsedAndTheSweepExits1() throws {
        let held = try HeldPort()
        defer { held.close() }
        let run = try Portsweep.run(["sweep", "--ports", "\(held.port)", "--always-print-protocol", "--tcp-only"])
        #expect(run.status == 1)
        #expect(run.lines == ["[USED] TCP \(held.port)"])
        #expect(run.stderr.contains("WARNING: Target is localhost. All tests should succeed."))
        #expect(run.stderr.contains("WARNING: To test external connectivity, use your external IP address with --target"))
        #expect(run.stderr.contains("1 USED"))
    }

    @Test func aBindAddressThatIsNotLocalIsALocalError() throws {
        let run = try Portsweep.run(["sweep", "--ports", "40000", "--target", "192.0.2.1", "--bind", "192.0.2.1"])
        #expect(run.status == 2)
        #expect(run.errorLines.last?.contains("192.0.2.1") == true)
    }

    @Test func jsonAndCsvCarryCodeAndWord() throws {
        let ports = try QuietPorts(free: 0, held: 1)
        defer { ports.close() }
        let held = ports.held[0]
        let json = try ports.run(["sweep", "--ports", "\(held)", "--format", "json", "--quiet", "--tcp-only"])
        #expect(json.status == 1)
        let object = try JSONSerialization.jsonObject(with: Data((json.lines.first ?? "").utf8)) as? [String: Any]
        #expect(object?["code"] as? Int == 8 && object?["result"] as? String == "USED")
        #expect(object?["first"] as? Int == Int(held) && object?["errno"] as? String == "EADDRINUSE")
        #expect(json.stderr.isEmpty)
        let csv = try ports.run(["sweep", "--ports", "\(held)", "--format", "csv", "--no-group", "-q"])
        // The holder is the holding process (a python3 in the namespace, or this test process without root).
        #expect(csv.lines.count == 3 && csv.lines[0] == "port,protocol,code,result,errno,holder", "\(csv.lines)")
        #expect(csv.lines.dropFirst().first?.hasPrefix("\(held),TCP,8,USED,EADDRINUSE,\"held by ") == true, "\(csv.lines)")
        #expect(csv.lines.last == "\(held),UDP,0,PASS,,", "\(csv.lines)")
        #expect((object?["holder"] as? String)?.hasPrefix("held by ") == true, "\(json.stdout)")
    }

    @Test func netcatPathIsAcceptedAndIgnored() throws {
        let ports = try QuietPorts(free: 1)
        let free = ports.free[0]
        let run = try ports.run(["sweep", "--ports", "\(free)", "--netcat-path", "/bin/nc", "-q", "--error-codes"])
        #expect(run.status == 0)
        #expect(run.lines == ["[0] TCP/UDP \(free)"])
    }
}
}
