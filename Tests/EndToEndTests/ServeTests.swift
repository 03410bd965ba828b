import Foundation
import Testing

/// A `portsweep serve` in the background, on a free loopback port.
final class ServeProcess {
    let port: UInt16
    private let process: ListenProcess

    init(_ arguments: [String] = [], launcher: [String] = []) throws {
        port = try HeldPort.freePort()
        process = try ListenProcess(serve: ["--listen", "127.0.0.1:\(port)"] + arguments, launcher: launcher)
    }

    func ready() -> Bool { process.waitForErrors("serving /check_port") }

    var url: String { "http://127.0.0.1:\(port)" }

    func stop() -> Int32 { process.stop() }
    /// Notes (serving on, stopping) on stderr.
    var log: String { process.errors }
    /// The access log on stdout.
    var accessLog: String { process.log }
    var pid: Int32 { process.process.processIdentifier }
    func waitForLog(_ text: String) -> Bool { process.waitForErrors(text) }
}

extension ListenProcess {
    /// Runs `portsweep serve` instead of `listen` (its log is on stderr).
    convenience init(serve arguments: [String], launcher: [String] = []) throws {
        try self.init(arguments, launcher: launcher, subcommand: "serve")
    }
}

extension EndToEnd {
/// `portsweep serve` with curl as the client, probing listeners of `portsweep listen` on loopback.
@Suite struct ServeTests {
    static func check(_ server: ServeProcess, _ query: String) throws -> String {
        try Net.curl(["\(server.url)/check_port?\(query)"])
    }

    @Test func tcpStatusesByteForByte() throws {
        let server = try ServeProcess(["--rate-limit", "off", "--timeout", "1"])
        #expect(server.ready())
        let port = try HeldPort.freePort()
        let echo = try ListenProcess(["--ports", "\(port)", "--reply", "echo", "-q"])
        #expect(echo.waitForLog("listening on"))
        #expect(try Self.check(server, "port=\(port)&protocol=tcp") == """
            {
                "you_ip": "127.0.0.1",
                "scan_port": "\(port)",
                "scan_protocol": "tcp",
                "port_status": "Reachable",
                "received_data": null
            }

            """)
        #expect(try Self.check(server, "port=\(port)&protocol=TCP&confirmation_data=hello&format=text") == """
            you_ip: 127.0.0.1
            scan_port: \(port)
            scan_protocol: tcp
            port_status: Reachable and Verified
            received_data: hello
            confirmation_data: hello

            """)
        #expect(try Self.check(server, "port=\(port)&protocol=udp&confirmation_data=hey&format=TEXT")
            .contains("port_status: Reachable and Verified\nreceived_data: hey\n"))
        #expect(echo.stop() == 0)
        let closed = try Self.check(server, "port=\(port)&protocol=tcp&format=text")
        #expect(closed.contains("port_status: Unreachable\n"), "\(closed)")
        #expect(try Self.check(server, "port=\(port)&protocol=udp&format=text").contains("port_status: Unreachable\n"))
        let silentPort = try HeldPort.freePort()
        let silent = try ListenProcess(["--ports", "\(silentPort)", "--reply", "silent", "--udp-only", "-q"])
        #expect(silent.waitForLog("listening on"))
        #expect(try Self.check(server, "port=\(silentPort)&protocol=udp&format=text")
            .contains("port_status: Reachable or Filtered\nreceived_data: null\n"))
        #expect(silent.stop() == 0)
        #expect(server.stop() == 0)
    }

    @Test(.enabled(if: Portsweep.canMakeNamespaces && FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft"), "needs root and nft"))
    func aDroppedTCPPortIsFiltered() throws {
        try TestNetwork.with(.loopback) { network in
            try network.firewall(["tcp dport 25000 drop"])
            let server = try ServeProcess(["--timeout", "1"], launcher: ["/usr/sbin/ip", "netns", "exec", network.near])
            #expect(server.ready())
            let start = ContinuousClock.now
            let answer = try Portsweep.shell(["/usr/sbin/ip", "netns", "exec", network.near, "/usr/bin/curl", "-sS",
                                              "\(server.url)/check_port?port=25000&protocol=tcp&format=text"])
            #expect(answer.contains("port_status: Filtered\n"), "\(answer)")
            #expect(ContinuousClock.now - start < .seconds(3))
            #expect(server.stop() == 0)
        }
    }

    @Test(.enabled(if: Portsweep.canMakeNamespaces && FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft"), "needs root and nft"))
    func aProbeTheServerCannotSendIsA503NotUnreachable() throws {
        // The server's own firewall refuses its UDP probe (sendmsg fails with EPERM): that is the server's
        // problem, not the caller's port, and the caller's rate limit is not charged for it.
        try TestNetwork.with(.loopback) { network in
            try network.firewall(["udp dport 25001 drop"], hook: "output")
            let server = try ServeProcess(["--timeout", "1", "--rate-limit", "1/60"],
                                          launcher: ["/usr/sbin/ip", "netns", "exec", network.near])
            #expect(server.ready())
            func check(_ query: String) throws -> String {
                try Portsweep.shell(["/usr/sbin/ip", "netns", "exec", network.near, "/usr/bin/curl", "-sS", "-i",
                                     "\(server.url)/check_port?\(query)"])
            }
            let refused = try check("port=25001&protocol=udp")
            #expect(refused.hasPrefix("HTTP/1.1 503"), "\(refused)")
            #expect(refused.contains("\"error\": \"The server could not probe your port (EPERM on the server); try again later\""), "\(refused)")
            #expect(refused.contains("Retry-After: 5"), "\(refused)")
            #expect(!refused.contains("Unreachable"))
            // The limit is one check a minute: this one is still allowed, so the failed one was not counted.
            let next = try check("port=45002&protocol=udp&format=text")
            #expect(next.hasPrefix("HTTP/1.1 200"), "\(next)")
            #expect(next.contains("port_status: Unreachable\n"), "\(next)")
            #expect(server.stop() == 0)
        }
    }

    @Test(arguments: [
        ("protocol=tcp", "Port number and protocol are required"),
        ("port=80", "Port number and protocol are required"),
        ("port=abc&protocol=tcp", "Port must be an integer from 1 to 65535"),
        ("port=70000&protocol=tcp", "Port must be an integer from 1 to 65535"),
        ("port=80&protocol=sctp", "Unsupported protocol"),
        ("port=80&protocol=tcp&confirmation_data=123456789012345678901", "Confirmation data too long. Maximum length is 20 characters."),
        ("port=80&protocol=tcp&format=xml", "Unsupported format: use json or text"),
    ])
    func badRequestsGet400WithTheOriginalsMessages(query: String, message: String) throws {
        let server = try ServeProcess()
        #expect(server.ready())
        let json = try Net.curl(["-w", "%{http_code}", "\(server.url)/check_port?\(query)"])
        #expect(json == "{\n    \"error\": \"\(message)\"\n}\n400", "\(json)")
        if !query.contains("format=xml") {
            let text = try Net.curl(["-w", "%{http_code}", "\(server.url)/check_port?\(query)&format=text"])
            #expect(text == "Error: \(message)\n400", "\(text)")
        }
        #expect(server.stop() == 0)
    }

    @Test func theFifthCheckWithinAMinuteIs429WithADecreasingWait() throws {
        let server = try ServeProcess(["--timeout", "0.5"])
        #expect(server.ready())
        for n in 0..<4 {
            let answer = try Net.curl(["-i", "\(server.url)/check_port?port=1&protocol=tcp"])
            #expect(answer.contains("port_status"), "\(answer)")
            // Scripts can pace themselves: what is left after this check, and the rule.
            #expect(answer.contains("RateLimit-Remaining: \(3 - n)\r\n"), "\(answer)")
            #expect(answer.contains("RateLimit-Policy: 4;w=60\r\n"), "\(answer)")
        }
        // 400s do not count.
        #expect(try Self.check(server, "port=0&protocol=tcp").contains("error"))
        let first = try Net.curl(["-i", "\(server.url)/check_port?port=1&protocol=tcp"])
        #expect(first.hasPrefix("HTTP/1.1 429 Too Many Requests"), "\(first)")
        #expect(first.contains("Retry-After: "))
        #expect(first.contains("RateLimit-Remaining: 0\r\n"), "\(first)")
        #expect(first.contains("\"error\": \"Too many requests. Please wait.\""))
        usleep(200_000)
        let second = try Self.check(server, "port=1&protocol=tcp&format=text")
        #expect(second.hasPrefix("Error: Too many requests. Please wait. Wait time: "))
        func seconds(_ text: String) -> Double? {
            guard let range = text.range(of: #"[0-9]+\.[0-9]{2} seconds"#, options: .regularExpression) else { return nil }
            return Double(text[range].split(separator: " ")[0])
        }
        let a = try #require(seconds(first)), b = try #require(seconds(second))
        #expect(b < a && a <= 60)
        #expect(server.stop() == 0)
    }

    @Test func forwardedForIsIgnoredFromAnUntrustedPeerAndHonouredFromATrustedOne() throws {
        let untrusted = try ServeProcess(["--rate-limit", "off", "--timeout", "0.5"])
        #expect(untrusted.ready())
        let answer = try Net.curl(["-H", "X-Forwarded-For: 192.0.2.77", "\(untrusted.url)/check_port?port=1&protocol=tcp"])
        #expect(answer.contains("\"you_ip\": \"127.0.0.1\""), "\(answer)")
        #expect(untrusted.stop() == 0)
        // Trusted: the forwarded address is believed, but a loopback one is this server, not a caller (the
        // addresses a trusted proxy names are probed in ServeHardeningTests, in a namespace of their own).
        let trusted = try ServeProcess(["--rate-limit", "off", "--timeout", "0.5", "--trust-proxy", "127.0.0.1/32"])
        #expect(trusted.ready())
        let forwarded = try Net.curl(["-H", "X-Forwarded-For: 127.0.0.2", "\(trusted.url)/check_port?port=1&protocol=tcp"])
        #expect(forwarded.contains("\"error\": \"Cannot check 127.0.0.2: it is a loopback address\""), "\(forwarded)")
        #expect(trusted.stop() == 0)
    }

    @Test func hugeHeadersAndASlowClientDoNotHoldTheServer() throws {
        let server = try ServeProcess(["--rate-limit", "off", "--timeout", "0.5"])
        #expect(server.ready())
        let big = String(repeating: "a", count: 64 * 1024)
        let status = try Net.curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Big: \(big)", "\(server.url)/healthz"])
        #expect(status == "431", "status: \(status)")
        // A request target over 4096 bytes is 414, whether the line ends soon after (5,000 bytes) or would run on
        // past the head limit (40,000 bytes: answered before the rest is read).
        for length in [5_000, 40_000] {
            let long = "\(server.url)/check_port?port=1&protocol=tcp&pad=" + String(repeating: "b", count: length)
            let tooLong = try Net.curl(["-o", "/dev/null", "-w", "%{http_code}", long])
            #expect(tooLong == "414", "target of \(length) bytes: status \(tooLong)")
        }
        #expect(try Net.curl(["\(server.url)/healthz"]) == "ok\n")
        // A client that sends one byte a second: others are answered meanwhile.
        let slow = try Net.connect(server.port)
        Net.send(slow, "G")
        let start = ContinuousClock.now
        #expect(try Net.curl(["\(server.url)/healthz"]) == "ok\n")
        #expect(ContinuousClock.now - start < .seconds(1))
        close(slow)
        #expect(server.stop() == 0)
    }

    @Test func metricsHealthAndARequestHeadThatNeverEndsGets408() throws {
        let server = try ServeProcess(["--rate-limit", "off", "--timeout", "0.5", "--idle-timeout", "1"])
        #expect(server.ready())
        #expect(try Net.curl(["\(server.url)/healthz"]) == "ok\n")
        _ = try Self.check(server, "port=1&protocol=tcp")
        _ = try Self.check(server, "port=0&protocol=tcp")
        let metrics = try Net.curl(["\(server.url)/metrics"])
        #expect(metrics.contains(#"portsweep_checks_total{protocol="tcp",status="Unreachable"} 1"#), "\(metrics)")
        #expect(metrics.contains(#"portsweep_http_requests_total{status="400"} 1"#))
        #expect(metrics.contains("portsweep_probes_in_flight"))
        // One byte every 300 ms: the head is never whole within a second.
        let slow = try Net.connect(server.port)
        var answer = ""
        for byte in "GET /healthz HTTP/1.1\r\nHost: x\r\n".utf8 {
            Net.send(slow, String(UnicodeScalar(byte)))
            usleep(300_000)
            var buffer = [UInt8](repeating: 0, count: 512)
            let n = recv(slow, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if n > 0 { answer = String(decoding: buffer[0..<n], as: UTF8.self); break }
        }
        close(slow)
        #expect(answer.hasPrefix("HTTP/1.1 408 Request Timeout"), "answer: \(answer)")
        #expect(server.stop() == 0)
    }

    @Test func sigtermLetsAChecksInFlightFinish() throws {
        let server = try ServeProcess(["--rate-limit", "off", "--timeout", "1.5"])
        #expect(server.ready())
        let silentPort = try HeldPort.freePort()
        let silent = try ListenProcess(["--ports", "\(silentPort)", "--reply", "silent", "--udp-only", "-q"])
        #expect(silent.waitForLog("listening on"))
        let answer = Locked("")
        let done = DispatchSemaphore(value: 0)
        let url = "\(server.url)/check_port?port=\(silentPort)&protocol=udp&format=text"
        DispatchQueue.global().async {
            answer.value = (try? Net.curl([url])) ?? ""
            done.signal()
        }
        // The probe's datagram reached the silent listener: the check is in flight, waiting for its timeout.
        #expect(silent.waitForLog("UDP \(silentPort) "))
        let status = server.stop()
        done.wait()
        #expect(status == 0)
        #expect(answer.value.contains("port_status: Reachable or Filtered"), "answer: \(answer.value)")
        #expect(silent.stop() == 0)
    }

    @Test func aThousandParallelChecksAreAnsweredCorrectly() throws {
        let server = try ServeProcess(["--rate-limit", "off", "--timeout", "2"])
        #expect(server.ready())
        let port = try HeldPort.freePort()
        let listener = try ListenProcess(["--ports", "\(port)", "--tcp-only", "-q", "--max-per-port", "5000"])
        #expect(listener.waitForLog("listening on"))
        // curl's parallel mode: 1,000 requests in flight at once from one process.
        let url = "\(server.url)/check_port?port=\(port)&protocol=tcp"
        let out = try Net.curl(["-Z", "--parallel-max", "1000"] + Array(repeating: url, count: 1000))
        let reachable = out.components(separatedBy: "\"port_status\": \"Reachable\"").count - 1
        #expect(reachable == 1000, "answers: \(out.prefix(300))")
        #expect(listener.stop() == 0)
        #expect(server.stop() == 0)
    }
}
}
