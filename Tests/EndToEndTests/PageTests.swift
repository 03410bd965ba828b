import Foundation
import Testing

extension EndToEnd {
/// The pages, in a real browser (see `Browser`).
@Suite(.enabled(if: Browser.available && Portsweep.canMakeNamespaces, "needs chromium, chromium-driver, python3-selenium, root"))
struct PageTests {
    /// The colour a verdict has in the legend, as the browser computes it, against the colour drawn in the
    /// grid's cell of each port: both read from the page.
    static let cellCheck = """
        def legend_rgb(word):
            swatch = driver.find_element(By.CSS_SELECTOR, 'li[data-verdict="' + word + '"] .swatch')
            return [int(v) for v in swatch.value_of_css_property("background-color").split("(")[1].split(")")[0].split(",")[:3]]
        def cells(checks):
            out = []
            for protocol, port, word in checks:
                drawn = driver.execute_script("return window.portsweep.grids[arguments[0]].pixel(arguments[1])", protocol, port)
                out.append([protocol, port, word, drawn == legend_rgb(word)])
            return out
        """

    /// The URL with its token that a command with --dashboard prints on stderr, and the server's base URL.
    static func dashboardURL(of process: ListenProcess) -> (url: String, base: String)? {
        #expect(process.waitForErrors("dashboard at "), "\(process.errors)")
        guard let url = process.errors.split(separator: " ").first(where: { $0.hasPrefix("http://") && $0.contains("token=") })
            .map({ String($0.split(separator: "\n")[0]) }), let mark = url.range(of: "/?token=") else {
            Issue.record("no dashboard URL in \(process.errors)")
            return nil
        }
        return (url, String(url[..<mark.lowerBound]))
    }

    /// `--format html` of a sweep in a namespace with nftables rules: one file, opened from disk (no server), whose
    /// grid cells have the legend's colour of each port's verdict, whose hover names the port in text, and whose
    /// table lists the groups.
    @Test func theHTMLReportOpensFromAFileWithEveryVerdictInItsGrid() throws {
        let rules = """
            nft add table inet t
            nft add chain inet t input '{ type filter hook input priority 0; }'
            nft add rule inet t input tcp dport 2100-2199 drop
            nft add rule inet t input udp dport 2200-2249 reject
            """
        let run = try Portsweep.run(["sweep", "--ports", "2000-2299", "--timeout", "0.5", "--format", "html", "-q"],
                                    inNamespace: true, setup: rules + "\n" + Portsweep.holding(tcp: [2250]))
        #expect(run.status == 1, "\(run.stderr)")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("report-\(UUID().uuidString).html")
        try run.stdout.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        #expect(run.stdout.hasPrefix("<!DOCTYPE html>") && !run.stdout.contains("src=\"http"), "self-contained")

        let result = try Browser.session(Self.cellCheck + "\n" + """
            driver.get("\(file.absoluteString)")
            result["cells"] = cells([["TCP", 2000, "PASS"], ["TCP", 2150, "FAIL"], ["TCP", 2250, "USED"], ["TCP", 2299, "PASS"],
                                     ["UDP", 2100, "PASS"], ["UDP", 2200, "SEND"], ["UDP", 2249, "SEND"], ["TCP", 80, "untested"]])
            canvas = driver.find_element(By.ID, "grid-TCP")
            x, y = cell_offset(canvas, 2150)
            ActionChains(driver).move_to_element_with_offset(canvas, x, y).perform()
            result["hover"] = driver.find_element(By.ID, "readout").text
            finder = driver.find_element(By.ID, "find")
            finder.send_keys("2250")
            result["found"] = driver.find_element(By.ID, "found").text
            result["rows"] = [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#groups tbody tr")]
            result["summary"] = driver.find_element(By.ID, "summary").text
            shot("report")
            """)
        #expect(result["error"] == nil, "\(result)")
        let cells = result["cells"] as? [[Any]] ?? []
        #expect(cells.count == 8 && cells.allSatisfy { $0.last as? Bool == true }, "cells not in their verdict's colour: \(cells)")
        #expect(result["hover"] as? String == "TCP 2150: FAIL (ETIMEDOUT)", "\(result)")
        let found = result["found"] as? String ?? ""
        #expect(found.hasPrefix("TCP 2250: USED (EADDRINUSE, held by python3") && found.hasSuffix("; UDP 2250: PASS"), "\(found)")
        #expect(result["rows"] as? [String] == [
            "TCP 2000-2099 PASS", "TCP 2100-2199 FAIL ETIMEDOUT", "TCP 2200-2249 PASS",
            (result["rows"] as? [String])?.dropFirst(3).first ?? "", "TCP 2251-2299 PASS",
            "UDP 2000-2199 PASS", "UDP 2200-2249 SEND ECONNREFUSED", "UDP 2250-2299 PASS",
        ], "\(result)")
        #expect(((result["rows"] as? [String])?.dropFirst(3).first ?? "").hasPrefix("TCP 2250 USED EADDRINUSE, held by python3"))
        #expect((result["summary"] as? String ?? "").hasPrefix("300 ports, TCP and UDP (600 tests) in"), "\(result)")
    }

    /// serve's root page in a namespace of its own: a listener on 3000, nftables dropping TCP 3001. The form checks
    /// each and says what the status means; the budget counts down; a bad port is refused in words.
    @Test func serveFrontPageChecksAnOpenAndADroppedPort() throws {
        let ns = "psweb\(getpid() % 100_000)"
        try runSetupScript("""
            ip netns add \(ns) && ip -n \(ns) link set lo up
            ip netns exec \(ns) nft add table inet t
            ip netns exec \(ns) nft add chain inet t input '{ type filter hook input priority 0; }'
            ip netns exec \(ns) nft add rule inet t input tcp dport 3001 drop
            """)
        defer { _ = try? runSetupScript("ip netns del \(ns)") }
        let launcher = ["/usr/sbin/ip", "netns", "exec", ns]
        let listener = try ListenProcess(["--ports", "3000", "--tcp-only", "--reply", "silent", "-q"], launcher: launcher)
        defer { _ = listener.stop() }
        let server = try ServeProcess(["--timeout", "1"], launcher: launcher)
        defer { _ = server.stop() }
        #expect(listener.waitForLog("listening on") && server.ready())

        let result = try Browser.session("""
            driver.get("\(server.url)/")
            result["address"] = driver.find_element(By.ID, "address").text
            result["budget"] = driver.find_element(By.ID, "budget").text
            result["example"] = driver.find_element(By.TAG_NAME, "pre").text.split("\\n")[0]
            def check(port, protocol="tcp"):
                field = driver.find_element(By.ID, "port")
                field.clear()
                field.send_keys(port)
                driver.find_element(By.CSS_SELECTOR, "#protocol option[value='" + protocol + "']").click()
                driver.execute_script("document.getElementById('status').textContent = ''")
                driver.find_element(By.ID, "submit").click()
                WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "status").text not in ("", "Checking…")
                                                and d.find_element(By.ID, "submit").is_enabled())
                return [driver.find_element(By.ID, "status").text, driver.find_element(By.ID, "meaning").text]
            result["open"] = check("3000")
            shot("serve")
            result["dropped"] = check("3001")
            result["bad"] = check("70000")
            result["left"] = driver.find_element(By.ID, "left").text
            """, netns: ns)
        #expect(result["error"] == nil, "\(result)")
        #expect(result["address"] as? String == "127.0.0.1", "\(result)")
        #expect(result["budget"] as? String == "4 of 4 checks left in any 60 s.", "\(result)")
        #expect(result["example"] as? String == "curl '\(server.url)/check_port?port=443&protocol=tcp'", "\(result)")
        let open = result["open"] as? [String] ?? []
        #expect(open.first == "Reachable" && open.last?.hasPrefix("Something on this port answered") == true, "\(result)")
        let dropped = result["dropped"] as? [String] ?? []
        #expect(dropped.first == "Filtered" && dropped.last?.hasPrefix("No answer at all") == true, "\(result)")
        #expect((result["bad"] as? [String])?.first == "Port must be an integer from 1 to 65535", "\(result)")
        #expect(result["left"] as? String == "2", "two checks made, the bad port not counted: \(result)")
    }

    /// `sweep --dashboard` in a namespace with nftables rules (TCP 2100-2149 dropped, waiting out an 8 s deadline;
    /// UDP 2200-2249 rejected): the page, opened with the printed URL, trades the token for a cookie, shows the
    /// sweep running, then done, with every verdict's colour in its cells, the counts, and the results as
    /// downloads; without the token the server answers 403. The page stays up after the sweep, and Ctrl-C then
    /// ends the command with the sweep's status (1: some ports did not pass), not 130.
    @Test func sweepDashboardDrawsVerdictsAsTheyComeAndStaysUpUntilCtrlC() throws {
        let ns = "psdash\(getpid() % 100_000)"
        try runSetupScript("""
            ip netns add \(ns) && ip -n \(ns) link set lo up
            ip netns exec \(ns) nft add table inet t
            ip netns exec \(ns) nft add chain inet t input '{ type filter hook input priority 0; }'
            ip netns exec \(ns) nft add rule inet t input tcp dport 2100-2149 drop
            ip netns exec \(ns) nft add rule inet t input udp dport 2200-2249 reject
            """)
        defer { _ = try? runSetupScript("ip netns del \(ns)") }
        let launcher = ["/usr/sbin/ip", "netns", "exec", ns]
        let sweep = try ListenProcess(["--ports", "2000-2299", "--timeout", "8", "--dashboard", "127.0.0.1:0"],
                                      launcher: launcher, subcommand: "sweep")
        defer { if sweep.process.isRunning { _ = sweep.stop(SIGKILL) } }
        guard let (url, base) = Self.dashboardURL(of: sweep) else { return }
        func status(_ extra: [String], _ path: String) throws -> String {
            try Portsweep.shell(launcher + ["/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"] + extra + [base + path])
        }
        #expect(try status([], "/") == "403")
        #expect(try status([], "/results.csv") == "403")
        #expect(try status(["-H", "Cookie: portsweep-dashboard-1=\(url.split(separator: "=").last!)"], "/events") == "403",
                "a cookie of another port's dashboard")

        let result = try Browser.session(Self.cellCheck + "\n" + """
            driver.get("\(url)")
            result["url"] = driver.current_url
            result["cookie"] = driver.execute_script("return document.cookie")
            WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.portsweep.last && window.portsweep.last.phase") == "done")
            result["phases"] = driver.execute_script("return window.portsweep.phases")
            result["updates"] = driver.execute_script("return window.portsweep.updates")
            result["cells"] = cells([["TCP", 2000, "PASS"], ["TCP", 2120, "FAIL"], ["TCP", 2299, "PASS"],
                                     ["UDP", 2120, "PASS"], ["UDP", 2230, "SEND"], ["TCP", 80, "untested"]])
            result["counts"] = texts("#counts tbody tr")
            result["progress"] = driver.find_element(By.ID, "progress").text
            result["summary"] = driver.find_element(By.ID, "summary").text
            fetch = "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => r.text()).then(done, e => done(String(e)))"
            result["jsonl"] = driver.execute_async_script(fetch, "/results.jsonl").strip().split("\\n")
            result["csv"] = driver.execute_async_script(fetch, "/results.csv").strip().split("\\n")
            shot("dashboard")
            """, netns: ns)
        #expect(result["error"] == nil, "\(result)")
        #expect(result["url"] as? String == base + "/", "the token leaves the address bar: \(result)")
        #expect(result["cookie"] as? String == "", "HttpOnly: no script reads the cookie: \(result)")
        let phases = result["phases"] as? [[String: Any]] ?? []
        #expect(phases.first?["phase"] as? String == "running" && (phases.first?["done"] as? Int ?? 300) < 300
                && phases.last?["phase"] as? String == "done" && phases.last?["done"] as? Int == 300,
                "seen running with ports left, then done: \(phases)")
        let cells = result["cells"] as? [[Any]] ?? []
        #expect(cells.count == 6 && cells.allSatisfy { $0.last as? Bool == true }, "cells not in their verdict's colour: \(cells)")
        #expect(result["counts"] as? [String] == ["PASS 250 250", "FAIL 50 0", "SEND 0 50"], "\(result)")
        #expect((result["progress"] as? String ?? "").hasPrefix("300 of 300 ports · "), "\(result)")
        #expect((result["summary"] as? String ?? "").hasPrefix("300 ports, TCP and UDP (600 tests) in"), "\(result)")
        let jsonl = result["jsonl"] as? [String] ?? []
        #expect(jsonl.count == 600 && jsonl.contains("{\"code\":1,\"errno\":\"ETIMEDOUT\",\"port\":2120,\"protocol\":\"TCP\",\"result\":\"FAIL\"}"),
                "\(jsonl.prefix(3)) … \(jsonl.count) lines")
        let csv = result["csv"] as? [String] ?? []
        #expect(csv.first == "port,protocol,code,result,errno,holder" && csv.count == 601 && csv.contains("2230,UDP,2,SEND,ECONNREFUSED,"),
                "\(csv.prefix(3)) … \(csv.count) lines")

        #expect(sweep.process.isRunning, "the page stays up after the sweep")
        #expect(sweep.stop(SIGINT) == 1, "the sweep's own status after Ctrl-C: \(sweep.errors)")
        #expect(sweep.log.contains("[FAIL] TCP 2100-2149") && sweep.log.contains("[SEND] UDP 2200-2249"), "\(sweep.log)")
    }

    /// `listen --dashboard` in a namespace of its own: the page starts a listener from its form (after refusing a
    /// bad port spec with the command line's own message), a connection and a datagram show in the log, the
    /// counters, the busiest ports and the grid; the filter and the timestamps switch work; Stop closes the
    /// ports. A POST from another origin, or without the cookie, is refused.
    @Test func listenDashboardStartsAListenerFromItsFormAndShowsWhatComes() throws {
        let ns = "pslisten\(getpid() % 100_000)"
        try runSetupScript("ip netns add \(ns) && ip -n \(ns) link set lo up")
        defer { _ = try? runSetupScript("ip netns del \(ns)") }
        let launcher = ["/usr/sbin/ip", "netns", "exec", ns]
        let listen = try ListenProcess(["--dashboard", "127.0.0.1:0"], launcher: launcher)
        defer { if listen.process.isRunning { _ = listen.stop(SIGKILL) } }
        guard let (url, base) = Self.dashboardURL(of: listen) else { return }
        let jar = NSTemporaryDirectory() + "jar-\(UUID().uuidString)"
        defer { unlink(jar) }
        _ = try Portsweep.shell(launcher + ["/usr/bin/curl", "-s", "-o", "/dev/null", "-c", jar, url])
        func post(_ extra: [String]) throws -> String {
            try Portsweep.shell(launcher + ["/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                                            "-H", "Content-Type: application/json", "-d", "{\"ports\":\"4100\"}"] + extra + [base + "/start"])
        }
        #expect(try post(["-b", jar, "-H", "Origin: http://evil.example"]) == "403", "another origin")
        #expect(try post(["-b", jar]) == "403", "no Origin")
        #expect(try post(["-H", "Origin: \(base)"]) == "403", "no cookie")

        let result = try Browser.session(Self.cellCheck + "\n" + """
            import socket, urllib.request
            driver.get("\(url)")
            WebDriverWait(driver, 10).until(lambda d: d.execute_script("return window.portsweep.last && window.portsweep.last.phase") == "stopped")
            result["initial"] = driver.find_element(By.ID, "phase").text
            def start(ports):
                field = driver.find_element(By.ID, "ports")
                field.clear()
                field.send_keys(ports)
                driver.find_element(By.ID, "start").click()
            start("70000")
            WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "error").text != "")
            result["bad"] = driver.find_element(By.ID, "error").text
            start("4000-4009")
            WebDriverWait(driver, 10).until(lambda d: d.execute_script("return window.portsweep.last.phase") == "listening")
            result["error_after"] = driver.find_element(By.ID, "error").text
            result["description"] = driver.find_element(By.ID, "description").text
            with urllib.request.urlopen("http://127.0.0.1:4003/", timeout=5) as answer:
                result["http"] = answer.read().decode().splitlines()[0]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.sendto(b"hello\\n", ("127.0.0.1", 4005))
            WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "connections").text == "1" and d.find_element(By.ID, "datagrams").text == "1")
            WebDriverWait(driver, 10).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log .line")) >= 3)
            result["lines"] = texts("#log .line")
            result["last_client"] = driver.find_element(By.ID, "last-client").text
            result["busiest"] = texts("#busiest tbody tr")
            result["cells"] = cells([["TCP", 4003, "hit recently"], ["TCP", 4000, "listening"], ["UDP", 4005, "hit recently"],
                                     ["UDP", 4009, "listening"], ["TCP", 4010, "untested"]])
            shot("listen")
            # The log is drawn again on each switch: read once the page shows what was asked.
            def shown():
                return texts("#log .line", True)
            driver.find_element(By.ID, "filter").send_keys("4005")
            WebDriverWait(driver, 10).until(lambda d: len(shown()) == 1)
            result["filtered"] = shown()
            driver.find_element(By.ID, "timestamps").click()
            WebDriverWait(driver, 10).until(lambda d: all(line.startswith("UDP") for line in shown()))
            result["untimed"] = shown()
            driver.find_element(By.ID, "stop").click()
            WebDriverWait(driver, 10).until(lambda d: d.execute_script("return window.portsweep.last.phase") == "stopped")
            try:
                urllib.request.urlopen("http://127.0.0.1:4003/", timeout=5)
                result["after_stop"] = "answered"
            except Exception as error:
                result["after_stop"] = type(error).__name__ + " " + str(error)
            """, netns: ns)
        #expect(result["error"] == nil, "\(result)")
        #expect(result["initial"] as? String == "Stopped", "\(result)")
        #expect(result["bad"] as? String == "The value '70000' is invalid for '--ports <RANGE>': port 70000 is outside 1-65535", "\(result)")
        #expect(result["error_after"] as? String == "" && result["description"] as? String == "10 TCP and UDP ports of 0.0.0.0 (4000-4009), reply http", "\(result)")
        #expect(result["http"] as? String == "Port test successful!", "\(result)")
        let lines = result["lines"] as? [String] ?? []
        #expect(lines.contains { $0.contains("listening on 10 TCP and UDP ports") }, "\(lines)")
        #expect(lines.contains { $0.contains("TCP 4003 127.0.0.1:") && $0.contains("requests=1") }, "\(lines)")
        #expect(lines.contains { $0.contains("UDP 4005 127.0.0.1:") && $0.contains("in=6") }, "\(lines)")
        #expect((result["last_client"] as? String ?? "").hasPrefix("127.0.0.1:"), "\(result)")
        #expect(Set(result["busiest"] as? [String] ?? []) == ["TCP 4003 1", "UDP 4005 1"], "\(result)")
        let cells = result["cells"] as? [[Any]] ?? []
        #expect(cells.count == 5 && cells.allSatisfy { $0.last as? Bool == true }, "cells not in their state's colour: \(cells)")
        let filtered = result["filtered"] as? [String] ?? []
        #expect(filtered.count == 1 && filtered[0].contains("UDP 4005"), "\(filtered)")
        #expect((result["untimed"] as? [String])?.first?.hasPrefix("UDP 4005") == true, "\(result)")
        #expect((result["after_stop"] as? String ?? "").contains("Connection refused"), "\(result)")
        #expect(listen.stop(SIGINT) == 0)
        #expect(listen.errors.contains("1 connection, 1 datagram"), "\(listen.errors)")
    }
}
}
