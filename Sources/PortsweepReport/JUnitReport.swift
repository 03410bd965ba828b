public import PortsweepEngine

/// `--format junit`: JUnit XML that CI systems (Jenkins, GitLab, GitHub's test reporters) render — one
/// `testsuite` for the sweep, with a `testcase` per policy rule (failing when any of its tests deviates, the
/// deviations listed), or without a policy a `testcase` per group of consecutive ports (failing unless PASS).
public struct JUnitReport {
    public var name: String
    public var seconds: Double = 0
    /// When the sweep started, ISO 8601.
    public var timestamp: String
    private var grouper = Grouper(byErrno: true)
    private var groups: [PortGroup] = []

    public init(name: String, timestamp: String) {
        self.name = name
        self.timestamp = timestamp
    }

    /// Without a policy: results in port order per protocol.
    public mutating func add(_ result: PortResult) {
        if let group = grouper.add(result) { groups.append(group) }
    }

    struct Case {
        var name: String
        var classname: String
        var failure: (message: String, text: String)?
    }

    /// The document, from a policy's tallies when there is one, else from the groups.
    public mutating func document(policy check: PolicyCheck?) -> String {
        let cases: [Case]
        if let check {
            cases = zip(check.policy.rules, check.tallies).map { rule, tally in
                let failure = tally.deviating == 0 ? nil : (
                    message: "\(tally.deviating) of \(tally.tested) tests deviate from '\(rule.text)'",
                    text: tally.deviations.map { PolicyCheck.text($0, rule) }.joined(separator: "\n"))
                return Case(name: rule.text + (tally.tested == 0 ? " (no port tested)" : ""),
                            classname: "portsweep.policy", failure: failure)
            }
        } else {
            groups += grouper.finish()
            let sorted = groups.sorted { ($0.transport, $0.first) < ($1.transport, $1.first) }
            cases = sorted.map { group in
                let reason = HTMLReport.reason(group)
                let name = "\(group.transport.rawValue) \(group.portText)"
                let failure = group.outcome.isPass ? nil : (
                    message: "\(group.outcome.word)" + (reason.isEmpty ? "" : " (\(reason))"),
                    text: "[\(group.outcome.word)] \(name)" + (reason.isEmpty ? "" : " (\(reason))"))
                return Case(name: name, classname: "portsweep.\(group.transport.rawValue)", failure: failure)
            }
        }
        let failures = cases.filter { $0.failure != nil }.count
        let time = String(format: "%.3f", seconds)
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        xml += "<testsuites name=\"portsweep\" tests=\"\(cases.count)\" failures=\"\(failures)\" errors=\"0\" time=\"\(time)\">\n"
        xml += "  <testsuite name=\"\(Self.escape(name))\" tests=\"\(cases.count)\" failures=\"\(failures)\" errors=\"0\" skipped=\"0\" time=\"\(time)\" timestamp=\"\(Self.escape(timestamp))\">\n"
        for testCase in cases {
            xml += "    <testcase name=\"\(Self.escape(testCase.name))\" classname=\"\(testCase.classname)\" time=\"0\""
            if let failure = testCase.failure {
                xml += ">\n      <failure message=\"\(Self.escape(failure.message))\" type=\"deviation\">\(Self.escape(failure.text))</failure>\n    </testcase>\n"
            } else {
                xml += "/>\n"
            }
        }
        xml += "  </testsuite>\n</testsuites>"
        return xml
    }

    /// Text for XML content and attributes: the five entities, and no character XML 1.0 forbids (a holder's
    /// name is whatever a process called itself).
    public static func escape(_ text: String) -> String { Markup.escape(text, xml: true) }
}
