import Foundation
import PortsweepEngine
import PortsweepReport
import Testing

@Suite struct ReportTests {
    static func results(_ spec: [(ClosedRange<UInt16>, Outcome)], errno: Int32 = 0) -> [PortResult] {
        spec.flatMap { range, outcome in
            range.map { PortResult(port: $0, transport: .tcp, outcome: outcome, errno: outcome.isPass ? 0 : errno) }
        }
    }

    static func render(_ results: [PortResult], _ options: RenderOptions) -> [String] {
        var renderer = ResultRenderer(options: options)
        var lines = renderer.header()
        for result in results { lines += renderer.add(result) }
        return lines + renderer.finish()
    }

    @Test func groupsConsecutivePortsWithTheSameVerdict() {
        let results = Self.results([(8080...8085, .pass), (8086...8086, .fail), (8087...8090, .pass)], errno: ETIMEDOUT)
        #expect(Self.render(results, RenderOptions()) == ["[PASS] 8080-8085", "[FAIL] 8086", "[PASS] 8087-8090"])
    }

    @Test func anInterruptedTCPAndUDPRunGroupsWhatEachProtocolHas() {
        // Ports 1-3 have both verdicts, 4-5 TCP only (the sweep stopped before their UDP test), 6 both.
        var results: [PortResult] = []
        for port: UInt16 in 1...6 {
            results.append(PortResult(port: port, transport: .tcp, outcome: .pass))
            if port <= 3 || port == 6 { results.append(PortResult(port: port, transport: .udp, outcome: .pass)) }
        }
        #expect(Self.render(results, RenderOptions(bothProtocols: true))
                == ["[PASS] TCP/UDP 1-3", "[PASS] TCP 4-5", "[PASS] TCP/UDP 6"])
        // A UDP verdict without its TCP one, last.
        let udpOnly = results + [PortResult(port: 7, transport: .udp, outcome: .send)]
        #expect(Self.render(udpOnly, RenderOptions(bothProtocols: true)).last == "[SEND] UDP 7")
    }

    @Test func summariesSayPortAndTestInTheSingular() {
        #expect(SummaryText.line(counts: [.pass: 2], total: 2, seconds: 1, protocols: 2).hasPrefix("1 port, TCP and UDP (2 tests) in"))
        #expect(SummaryText.line(counts: [.pass: 1], total: 1, seconds: 1).hasPrefix("1 port in"))
        #expect(SummaryText.line(counts: [.pass: 10], total: 10, seconds: 1, interrupted: ("SIGINT", 90))
            .hasPrefix("interrupted by SIGINT: 10 of 100 ports tested, 90 left untested, in 1.00 s"))
    }

    @Test func doesNotGroupAcrossGapsInTheSpec() {
        let results = [22, 80, 81].map { PortResult(port: $0, transport: .tcp, outcome: .pass) }
        #expect(Self.render(results, RenderOptions()) == ["[PASS] 22", "[PASS] 80-81"])
    }

    @Test func protocolLabelNoGroupAndErrorCodes() {
        let results = Self.results([(25...26, .fail), (27...27, .used)], errno: ECONNREFUSED)
        #expect(Self.render(results, RenderOptions(showProtocol: true)) == ["[FAIL] TCP 25-26", "[USED] TCP 27"])
        #expect(Self.render(results, RenderOptions(grouped: false)) == ["[FAIL] 25", "[FAIL] 26", "[USED] 27"])
        #expect(Self.render(results, RenderOptions(errorCodes: true)) == ["[1] 25-26", "[8] 27"])
        #expect(Self.render(results, RenderOptions(detailed: true)) == ["[FAIL] 25-26 (ECONNREFUSED)", "[USED] 27 (ECONNREFUSED)"])
    }

    @Test func jsonLinesPerGroupAndPerPort() throws {
        let results = Self.results([(1...2, .pass), (3...3, .send)], errno: ETIMEDOUT)
        let grouped = Self.render(results, RenderOptions(format: .json))
        #expect(grouped == [
            #"{"code":0,"first":1,"last":2,"protocol":"TCP","result":"PASS"}"#,
            #"{"code":2,"errno":"ETIMEDOUT","first":3,"last":3,"protocol":"TCP","result":"SEND"}"#,
        ])
        let perPort = Self.render(results, RenderOptions(format: .json, grouped: false))
        #expect(perPort.count == 3)
        let object = try JSONSerialization.jsonObject(with: Data(perPort[2].utf8)) as? [String: Any]
        #expect(object?["port"] as? Int == 3)
        #expect(object?["code"] as? Int == 2)
        #expect(object?["result"] as? String == "SEND")
    }

    @Test func csvWithHeader() {
        let results = Self.results([(1...2, .pass), (3...3, .fail)], errno: ECONNREFUSED)
        #expect(Self.render(results, RenderOptions(format: .csv)) == [
            "first,last,protocol,code,result,errno,holder", "1,2,TCP,0,PASS,,", "3,3,TCP,1,FAIL,ECONNREFUSED,",
        ])
        #expect(Self.render(results, RenderOptions(format: .csv, grouped: false)).first == "port,protocol,code,result,errno,holder")
        // A holder with a comma is quoted.
        let used = [PortResult(port: 22, transport: .tcp, outcome: .used, errno: EADDRINUSE, holder: .process(name: "sshd", pid: 812))]
        #expect(Self.render(used, RenderOptions(format: .csv)).last == "22,22,TCP,8,USED,EADDRINUSE,\"held by sshd, pid 812\"")
    }

    static func pairs(_ spec: [(ClosedRange<UInt16>, Outcome, Outcome)]) -> [PortResult] {
        spec.flatMap { range, tcp, udp in
            range.flatMap { [PortResult(port: $0, transport: .tcp, outcome: tcp), PortResult(port: $0, transport: .udp, outcome: udp)] }
        }
    }

    @Test func tcpAndUdpMergeWhereTheyAgreeAndSplitWhereTheyDiffer() {
        let results = Self.pairs([(8080...8082, .pass, .pass), (8083...8084, .used, .pass), (8085...8086, .fail, .send),
                                  (8087...8087, .pass, .pass)])
        #expect(Self.render(results, RenderOptions(bothProtocols: true)) == [
            "[PASS] TCP/UDP 8080-8082",
            "[USED] TCP 8083-8084", "[PASS] UDP 8083-8084",
            "[FAIL] TCP 8085-8086", "[SEND] UDP 8085-8086",
            "[PASS] TCP/UDP 8087",
        ])
        // JSON and CSV keep a record per protocol.
        let json = Self.render(results, RenderOptions(format: .json, bothProtocols: true))
        #expect(json.count == 7)
        #expect(json.allSatisfy { $0.contains(#""protocol":"TCP""#) || $0.contains(#""protocol":"UDP""#) })
        #expect(Self.render(results, RenderOptions(grouped: false, bothProtocols: true)).prefix(2)
                == ["[PASS] TCP 8080", "[PASS] UDP 8080"])
    }

    @Test func singleProtocolOmitsTheLabelUnlessAsked() {
        let results = (1...3).map { PortResult(port: $0, transport: .udp, outcome: .pass) }
        #expect(Self.render(results, RenderOptions()) == ["[PASS] 1-3"])
        #expect(Self.render(results, RenderOptions(showProtocol: true)) == ["[PASS] UDP 1-3"])
    }

    @Test func summaryLine() {
        let line = SummaryText.line(counts: [.pass: 65000, .fail: 535], total: 65535, seconds: 2.5)
        #expect(line == "65535 ports in 2.50 s (26,214 ports/s): 65000 PASS, 535 FAIL")
        let both = SummaryText.line(counts: [.pass: 20], total: 20, seconds: 1, protocols: 2)
        #expect(both == "10 ports, TCP and UDP (20 tests) in 1.00 s (20 tests/s): 20 PASS")
    }

    /// A process name is whatever its owner chose: in the page it is text, and it cannot end the data script.
    @Test func theHTMLReportCarriesEveryGroupAndEscapesWhatItDidNotWrite() throws {
        var report = HTMLReport(title: "portsweep: 1-4 <TCP>", transports: [.tcp], generated: "Swept now")
        let hostile = PortHolder.process(name: "</script><img src=x onerror=alert(1)>", pid: 7)
        for port: UInt16 in 1...2 { report.add(PortResult(port: port, transport: .tcp, outcome: .pass)) }
        report.add(PortResult(port: 3, transport: .tcp, outcome: .used, errno: EADDRINUSE, holder: hostile))
        report.add(PortResult(port: 4, transport: .tcp, outcome: .fail, errno: ETIMEDOUT))
        report.summary = "4 ports in 0.01 s"
        let page = report.document
        #expect(page.hasPrefix("<!DOCTYPE html>") && page.contains("<title>portsweep: 1-4 &lt;TCP&gt;</title>"))
        #expect(!page.contains("<img") && !page.contains("</script><"), "\(page)")
        #expect(page.contains("<td>EADDRINUSE, held by &lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;, pid 7</td>"))
        let data = try #require(page.range(of: "<script type=\"application/json\" id=\"data\">"))
        let json = page[data.upperBound...].prefix { $0 != "<" }
        let rows = try JSONDecoder().decode([[String]].self, from: Data(json.utf8))
        #expect(rows.map { $0[0...3].joined(separator: " ") } == ["TCP 1 2 PASS", "TCP 3 3 USED", "TCP 4 4 FAIL"])
        #expect(rows[1][4] == "EADDRINUSE, held by </script><img src=x onerror=alert(1)>, pid 7")
    }
}
