import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import PortsweepEngine
@testable import PortsweepReport
import Testing

@Suite struct PolicyTests {
    static func rule(_ text: String) throws(Policy.Invalid) -> PolicyRule { try PolicyRule(parsing: text) }

    @Test func rulesReadAsTheyAreWritten() throws {
        let a = try Self.rule("tcp 80,443 pass")
        #expect(a.transports == [.tcp] && a.ports.count == 2 && a.expectation == .pass)
        let b = try Self.rule("TCP,udp 1-79 Blocked")
        #expect(b.transports == [.tcp, .udp] && b.ports.count == 79 && b.expectation == .blocked)
        #expect(try Self.rule("udp 53 SEND+RECV").expectation == .exactly([.send, .recv]))
        #expect(try Self.rule("both 7 any").expectation == .any)
    }

    @Test(arguments: [
        ("tcp 80", "a rule is PROTOCOLS PORTS WORD"),
        ("sctp 80 pass", "unknown protocol 'sctp'"),
        ("tcp 70000 pass", "port 70000 is outside 1-65535"),
        ("tcp 80 open", "unknown word 'open'"),
        ("udp 53 fail", "UDP has no FAIL"),
    ])
    func aBadRuleIsOneLineNamingIt(text: String, reason: String) {
        var message = ""
        do {
            _ = try Self.rule(text)
            Issue.record("\(text) was read")
        } catch {
            message = error.description
        }
        #expect(message.hasPrefix("invalid --expect '\(text)': ") && message.contains(reason), "\(message)")
    }

    @Test func yamlTakesRuleLinesAndMaps() throws {
        let rules = try Policy.parse(yaml: """
            # comment
            - tcp 80,443 pass
            - ports: 1-79
              protocols: [tcp, udp]
              expect: blocked
            - ports: 53
              protocols: udp
              expect: SEND
            """, file: "p.yaml")
        #expect(rules.map(\.text) == ["tcp 80,443 pass", "tcp,udp 1-79 blocked", "udp 53 SEND"])
        #expect(try Policy.parse(yaml: "rules:\n  - tcp 22 pass\n", file: "q.yaml").count == 1)
        for (bad, reason) in [("", "has no rules"), ("- tcp 80\n", "p.yaml, rule 1"), ("- ports: 80\n  expect: pass\n  port: 1\n", "unknown key 'port'"),
                              ("- ports: 80\n", "needs ports and expect"), ("- [1, 2]\n", "expected a rule"), ("a: [\n", "not YAML")] {
            do {
                _ = try Policy.parse(yaml: bad, file: "p.yaml")
                Issue.record("\(bad) was read")
            } catch {
                #expect(error.description.contains(reason), "\(error)")
            }
        }
    }

    static func results(_ spec: [(UInt16, Transport, Outcome)]) -> [PortResult] {
        spec.map { PortResult(port: $0.0, transport: $0.1, outcome: $0.2, errno: $0.2.isPass ? 0 : 110) }
    }

    /// The first rule naming a port decides; deviations are grouped over consecutive ports; the tallies count
    /// per rule.
    @Test func theFirstRuleDecidesAndOnlyDeviationsArePrinted() throws {
        let policy = Policy(rules: [try Self.rule("tcp 80 any"), try Self.rule("tcp 79-85 pass"), try Self.rule("udp 80-81 blocked")])
        var check = PolicyCheck(policy: policy, format: .text)
        var lines: [String] = []
        for result in Self.results([(79, .tcp, .pass), (80, .tcp, .fail), (80, .udp, .pass), (81, .tcp, .fail), (81, .udp, .send),
                                    (82, .tcp, .fail), (83, .tcp, .pass), (84, .tcp, .recv), (86, .tcp, .fail)]) {
            lines += check.add(result)
        }
        lines += check.finish()
        #expect(lines == ["[PASS, expected blocked] UDP 80", "[FAIL, expected PASS] TCP 81-82", "[RECV, expected PASS] TCP 84"])
        #expect(check.matched == 4 && check.deviated == 4 && check.unjudged == 1)
        #expect(check.tallies.map(\.tested) == [1, 5, 2] && check.tallies.map(\.deviating) == [0, 3, 1])
        #expect(check.summary == "policy: 4 tests match, 4 deviate (3 groups); 1 not named by any rule")
    }

    /// What CI systems read: testsuites, testsuite with tests/failures/time, testcase, failure with a message.
    @Test func junitHasTheElementsCISystemsRead() throws {
        let policy = Policy(rules: [try Self.rule("tcp 1-2 pass"), try Self.rule("tcp 3 blocked")])
        var check = PolicyCheck(policy: policy, format: .junit)
        for result in Self.results([(1, .tcp, .pass), (2, .tcp, .fail), (3, .tcp, .fail)]) { _ = check.add(result) }
        _ = check.finish()
        var report = JUnitReport(name: "sweep <of> \"ports\" \u{1}", timestamp: "2026-12-04T10:00:00Z")
        report.seconds = 1.5
        let xml = report.document(policy: check)
        let document = try XMLDocument(data: Data(xml.utf8))
        let suites = try #require(document.rootElement())
        #expect(suites.name == "testsuites" && suites.attribute(forName: "tests")?.stringValue == "2"
                && suites.attribute(forName: "failures")?.stringValue == "1")
        let suite = try #require(suites.elements(forName: "testsuite").first)
        #expect(suite.attribute(forName: "name")?.stringValue == "sweep <of> \"ports\" \u{FFFD}")
        #expect(suite.attribute(forName: "time")?.stringValue == "1.500" && suite.attribute(forName: "tests")?.stringValue == "2")
        let cases = suite.elements(forName: "testcase")
        #expect(cases.map { $0.attribute(forName: "name")?.stringValue } == ["tcp 1-2 pass", "tcp 3 blocked"])
        let failure = try #require(cases[0].elements(forName: "failure").first)
        #expect(failure.attribute(forName: "message")?.stringValue == "1 of 2 tests deviate from 'tcp 1-2 pass'")
        #expect(failure.stringValue == "[FAIL, expected PASS] TCP 2")
        #expect(cases[1].elements(forName: "failure").isEmpty)

        // Without a policy: a case per group, failing unless PASS.
        var plain = JUnitReport(name: "s", timestamp: "t")
        for result in Self.results([(1, .tcp, .pass), (2, .tcp, .pass), (3, .tcp, .fail)]) { plain.add(result) }
        let groups = try XMLDocument(data: Data(plain.document(policy: nil).utf8))
        let names = groups.rootElement()?.elements(forName: "testsuite").first?.elements(forName: "testcase")
            .map { "\($0.attribute(forName: "name")?.stringValue ?? "") \($0.elements(forName: "failure").first?.attribute(forName: "message")?.stringValue ?? "ok")" }
        #expect(names == ["TCP 1-2 ok", "TCP 3 FAIL (ETIMEDOUT)"])
    }
}
