import Foundation
import Testing

extension EndToEnd {
/// `portsweep serve` against a hostile or careless client: memory per connection and per client bounded, only the
/// caller's own address probed, the HTTP limits answered with the right status, an access log line per request.
@Suite struct ServeHardeningTests {
    /// Resident memory of a process, in MiB.
    static func rss(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
    }

    /// Opens `count` idle TCP connections to 127.0.0.1:port and prints `open=N`, then holds them until stdin closes.
    static let idleClient = #"""
    import resource, socket, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    port, count = int(sys.argv[1]), int(sys.argv[2])
    held = []
    for _ in range(count):
        s = socket.socket(); s.connect(("127.0.0.1", port)); held.append(s)
    print("open=%d" % len(held), flush=True)
    sys.stdin.readline()
    """#

    @Test func tenThousandIdleConnectionsCostLessThan64MiB() throws {
        let server = try ServeProcess(["--max-connections", "12000", "--idle-timeout", "120"])
        #expect(server.ready())
        #expect(try Net.curl(["\(server.url)/healthz"]) == "ok\n")
        let baseline = Self.rss(server.pid)
        let client = TestProcess()
        client.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        client.arguments = ["-c", Self.idleClient, "\(server.port)", "10000"]
        let input = Pipe(), output = Pipe()
        client.standardInput = input
        client.standardOutput = output
        try client.run()
        let report = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
        #expect(report.hasPrefix("open=10000"), "client: \(report)")
        // Every connection accepted (and its first read posted) before measuring: a request still answers.
        #expect(try Net.curl(["\(server.url)/healthz"]) == "ok\n")
        let held = Self.rss(server.pid)
        print("serve RSS: \(baseline) MiB idle, \(held) MiB with 10,000 idle connections")
        #expect(held - baseline < 64, "RSS grew from \(baseline) to \(held) MiB for 10,000 idle connections")
        try input.fileHandleForWriting.close()
        client.waitUntilExit()
        #expect(server.stop() == 0)
    }

    /// curl from a given source address (127.0.0.0/8 is all loopback here).
    static func check(_ server: ServeProcess, _ query: String, from source: String, headers: [String] = []) throws -> String {
        try Net.curl(["--interface", source] + headers.flatMap { ["-H", $0] } + ["\(server.url)/check_port?\(query)"])
    }

    @Test func theRateLimiterForgetsTheOldestClientAtItsCapAndCountsIt() throws {
        let server = try ServeProcess(["--rate-limit", "1/60", "--rate-limit-clients", "2", "--timeout", "0.3"])
        #expect(server.ready())
        let query = "port=1&protocol=tcp&format=text"
        #expect(try Self.check(server, query, from: "127.0.0.2").contains("port_status: Unreachable"))
        #expect(try Self.check(server, query, from: "127.0.0.2").contains("Too many requests"))
        #expect(try Self.check(server, query, from: "127.0.0.3").contains("port_status"))
        // A third client: the table holds two, so the least recent (127.0.0.2) is forgotten...
        #expect(try Self.check(server, query, from: "127.0.0.4").contains("port_status"))
        // ...and may check again (which pushes 127.0.0.3 out), while 127.0.0.4 is still remembered.
        #expect(try Self.check(server, query, from: "127.0.0.2").contains("port_status"))
        #expect(try Self.check(server, query, from: "127.0.0.4").contains("Too many requests"))
        let metrics = try Net.curl(["\(server.url)/metrics"])
        #expect(metrics.contains("portsweep_rate_limit_evictions_total 2"), "\(metrics)")
        #expect(metrics.contains("portsweep_rate_limit_clients 2"), "\(metrics)")
        #expect(server.stop() == 0)
    }

    /// Runs a serve that trusts loopback as its proxy, in a namespace of its own (the addresses it is asked to
    /// probe go nowhere: there is no route but loopback), and asks it with these X-Forwarded-For lines.
    static func forwarded(_ values: [String], query: String = "port=9&protocol=tcp&format=text",
                          server arguments: [String] = []) throws -> [String] {
        try TestNetwork.with(.loopback) { network in
            let launcher = ["/usr/sbin/ip", "netns", "exec", network.near]
            let server = try ServeProcess(["--trust-proxy", "127.0.0.0/8", "--timeout", "0.3"] + arguments,
                                          launcher: launcher)
            #expect(server.ready())
            var answers: [String] = []
            for value in values {
                let headers = value.split(separator: "\n").flatMap { ["-H", "X-Forwarded-For: \($0)"] }
                answers.append(try Portsweep.shell(launcher + ["/usr/bin/curl", "-sS", "-w", "%{http_code}"] + headers
                                                    + ["\(server.url)/check_port?\(query)"]))
            }
            #expect(server.stop() == 0)
            return answers
        }
    }

    @Test(.enabled(if: TestNetwork.available, "needs root and ip"))
    func forwardedForNamesTheClientNeverTheProxyNorThisHost() throws {
        let answers = try Self.forwarded([
            "198.18.7.7, 127.0.0.9",          // a chain ending in a trusted proxy: the client is the one before it
            "203.0.113.1, 198.18.7.8",        // whatever the client wrote on the left proves nothing
            "198.18.7.9:4711",                // ip:port
            "[2001:db8::7]:4711",             // [v6]:port
            "198.18.7.10\n127.0.0.9",         // two header lines, read in order
            "unknown",
            "0.0.0.0",
            "127.0.0.1, 127.0.0.9",           // only trusted hops
            "224.0.0.1", "169.254.1.1", "255.255.255.255", "fe80::1",
        ])
        func you(_ answer: String) -> String? {
            answer.split(separator: "\n").first { $0.hasPrefix("you_ip: ") }.map { String($0.dropFirst(8)) }
        }
        #expect(you(answers[0]) == "198.18.7.7", "\(answers[0])")
        #expect(you(answers[1]) == "198.18.7.8", "\(answers[1])")
        #expect(you(answers[2]) == "198.18.7.9", "\(answers[2])")
        #expect(you(answers[3]) == "2001:db8::7", "\(answers[3])")
        #expect(you(answers[4]) == "198.18.7.10", "\(answers[4])")
        #expect(answers[5] == "Error: Cannot tell the client's address: X-Forwarded-For entry 'unknown' is not an address\n400",
                "\(answers[5])")
        #expect(answers[6] == "Error: Cannot check 0.0.0.0: it is an unspecified address\n400", "\(answers[6])")
        #expect(answers[7] == "Error: Cannot tell the client's address: the proxy did not name one\n400", "\(answers[7])")
        for (answer, kind) in zip(answers[8...], ["a multicast", "a link-local", "a broadcast", "a link-local"]) {
            #expect(answer.hasSuffix("it is \(kind) address\n400"), "\(answer)")
        }
    }

    @Test(.enabled(if: TestNetwork.available, "needs root and ip"))
    func ipv6ClientsOfOneSlash64ShareABudget() throws {
        let answers = try Self.forwarded(["2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:3::a"],
                                         server: ["--rate-limit", "1/60"])
        #expect(answers[0].contains("you_ip: 2001:db8:1:2::a"), "\(answers[0])")
        #expect(answers[1].contains("Too many requests"), "same /64: \(answers[1])")
        #expect(answers[2].contains("you_ip: 2001:db8:1:3::a"), "another /64: \(answers[2])")
    }

    @Test func confirmationDataIsCountedInBytesAndBodiesAndVersionsHaveTheirStatus() throws {
        let server = try ServeProcess(["--rate-limit", "off", "--timeout", "0.3"])
        #expect(server.ready())
        // Six emoji are six characters but 24 bytes; five are 20 bytes.
        let six = String(repeating: "%F0%9F%98%80", count: 6), five = String(repeating: "%F0%9F%98%80", count: 5)
        let tooLong = try Net.curl(["-w", "%{http_code}", "\(server.url)/check_port?port=1&protocol=tcp&confirmation_data=\(six)"])
        #expect(tooLong == "{\n    \"error\": \"Confirmation data too long. Maximum length is 20 characters.\"\n}\n400", "\(tooLong)")
        let fits = try Net.curl(["\(server.url)/check_port?port=1&protocol=tcp&confirmation_data=\(five)"])
        #expect(fits.contains("port_status"), "\(fits)")
        // A body over --max-body (8192 by default: only POST /sweep takes one): 413, whether declared or chunked.
        let body = String(repeating: "x", count: 9000)
        #expect(try Net.curl(["-o", "/dev/null", "-w", "%{http_code}", "-d", body, "\(server.url)/healthz"]) == "413")
        #expect(try Net.curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "Transfer-Encoding: chunked", "-d", body,
                              "\(server.url)/healthz"]) == "413")
        for version in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9"] {
            let fd = try Net.connect(server.port)
            Net.send(fd, "GET /healthz \(version)\r\nHost: x\r\n\r\n")
            let answer = Net.receive(fd, atLeast: 1 << 20)
            close(fd)
            #expect(answer.hasPrefix("HTTP/1.1 505 HTTP Version Not Supported\r\n"), "\(version): \(answer)")
        }
        let metrics = try Net.curl(["\(server.url)/metrics"])
        #expect(metrics.contains("portsweep_http_requests_refused_total 5"), "two 413s, three 505s: \(metrics)")
        #expect(server.stop() == 0)
    }

    @Test func eachRequestIsALineOnStdoutInTextOrJSON() throws {
        let text = try ServeProcess(["--rate-limit", "off", "--timeout", "0.3"])
        #expect(text.ready())
        _ = try Net.curl(["\(text.url)/check_port?port=1&protocol=tcp"])
        _ = try Net.curl(["\(text.url)/healthz"])
        #expect(text.stop() == 0)
        let lines = text.accessLog.split(separator: "\n").map(String.init)
        #expect(lines.count == 2, "\(text.accessLog)")
        let pattern = #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z 127\.0\.0\.1 GET /check_port 200 tcp 1 Unreachable \d+\.\d ms$"#
        #expect(lines.first?.range(of: pattern, options: .regularExpression) != nil, "\(lines)")
        #expect(!text.accessLog.contains("seconds"), "\(text.accessLog)")

        let json = try ServeProcess(["--rate-limit", "off", "--timeout", "0.3", "--format", "json"])
        #expect(json.ready())
        _ = try Net.curl(["\(json.url)/check_port?port=1&protocol=udp"])
        #expect(json.stop() == 0)
        let record = try #require(try JSONSerialization.jsonObject(with: Data(json.accessLog.utf8)) as? [String: Any],
                                  "\(json.accessLog)")
        #expect(record["client"] as? String == "127.0.0.1" && record["port"] as? Int == 1)
        #expect(record["protocol"] as? String == "udp" && record["status"] as? Int == 200)
        #expect(record["result"] as? String == "Unreachable" && record["duration_ms"] is Double && record["time"] is String)
    }
}
}
