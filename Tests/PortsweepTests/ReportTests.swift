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
            "first,last,protocol,code,result,errno", "1,2,TCP,0,PASS,", "3,3,TCP,1,FAIL,ECONNREFUSED",
        ])
        #expect(Self.render(results, RenderOptions(format: .csv, grouped: false)).first == "port,protocol,code,result,errno")
    }

    @Test func summaryLine() {
        let line = SummaryText.line(counts: [.pass: 65000, .fail: 535], total: 65535, seconds: 2.5)
        #expect(line == "65535 ports in 2.50 s (26,214 ports/s): 65000 PASS, 535 FAIL")
    }
}
