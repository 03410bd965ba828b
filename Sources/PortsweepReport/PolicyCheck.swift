import Foundation
public import PortsweepEngine
import UVLoop

/// A sweep's results held against a policy, as they come in port order: only the deviations are printed,
/// grouped over consecutive ports (`[FAIL, expected PASS] TCP 443`), and each rule keeps its own tally for the
/// summary and for JUnit.
public struct PolicyCheck {
    /// Consecutive ports of one protocol whose outcome deviates alike from the same rule.
    public struct Deviation: Sendable, Equatable {
        public var transport: Transport
        public var first: UInt16
        public var last: UInt16
        public var observed: Outcome
        public var errno: Int32
        public var rule: Int

        public var portText: String { first == last ? "\(first)" : "\(first)-\(last)" }
    }

    /// What one rule saw.
    public struct Tally: Sendable, Equatable {
        public var tested = 0
        public var deviating = 0
        public var deviations: [Deviation] = []
    }

    public let policy: Policy
    public let format: OutputFormat
    public private(set) var tallies: [Tally]
    public private(set) var matched = 0
    public private(set) var deviated = 0
    /// Tests no rule names (not judged).
    public private(set) var unjudged = 0
    private var open: [Transport: Deviation] = [:]
    private let encoder: JSONEncoder

    public init(policy: Policy, format: OutputFormat) {
        self.policy = policy
        self.format = format
        tallies = policy.rules.map { _ in Tally() }
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    }

    public var header: [String] { format == .csv ? ["first,last,protocol,code,result,errno,expected,rule"] : [] }

    /// The lines a result completes (a deviation group ends when the next port does not continue it).
    public mutating func add(_ result: PortResult) -> [String] {
        guard let index = policy.rule(for: result.port, result.transport) else {
            unjudged += 1
            return close(result.transport)
        }
        tallies[index].tested += 1
        if policy.rules[index].expectation.accepts(result.outcome) {
            matched += 1
            return close(result.transport)
        }
        deviated += 1
        tallies[index].deviating += 1
        if var group = open[result.transport], group.rule == index, group.observed == result.outcome,
           group.errno == result.errno, result.port == group.last &+ 1 {
            group.last = result.port
            open[result.transport] = group
            return []
        }
        let closed = close(result.transport)
        open[result.transport] = Deviation(transport: result.transport, first: result.port, last: result.port,
                                           observed: result.outcome, errno: result.errno, rule: index)
        return closed
    }

    private mutating func close(_ transport: Transport) -> [String] {
        guard let group = open.removeValue(forKey: transport) else { return [] }
        tallies[group.rule].deviations.append(group)
        return [line(group)]
    }

    /// The lines of the groups still open.
    public mutating func finish() -> [String] {
        let groups = open.values.sorted { ($0.first, $0.transport) < ($1.first, $1.transport) }
        return groups.flatMap { close($0.transport) }
    }

    public func line(_ group: Deviation) -> String {
        let rule = policy.rules[group.rule]
        let errnoName = group.errno != 0 ? UVError.name(ofErrno: group.errno) : ""
        switch format {
        case .json:
            let record = Record(first: group.first, last: group.last, protocol: group.transport.rawValue,
                                code: group.observed.rawValue, result: group.observed.word,
                                errno: errnoName.isEmpty ? nil : errnoName, expected: rule.expectation.word, rule: rule.text)
            return (try? encoder.encode(record)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        case .csv:
            return "\(group.first),\(group.last),\(group.transport.rawValue),\(group.observed.rawValue),\(group.observed.word),"
                + "\(errnoName),\(rule.expectation.word),\(ResultRenderer.csvField(rule.text))"
        case .text, .html, .junit:
            return Self.text(group, rule)
        }
    }

    /// `[FAIL, expected PASS] TCP 443`
    static func text(_ group: Deviation, _ rule: PolicyRule) -> String {
        "[\(group.observed.word), expected \(rule.expectation.word)] \(group.transport.rawValue) \(group.portText)"
    }

    /// `policy: 598 tests match, 2 deviate (1 group); 0 not named by any rule`
    public var summary: String {
        let groups = tallies.reduce(0) { $0 + $1.deviations.count }
        return "policy: \(SummaryText.grouped(matched)) test\(matched == 1 ? "" : "s") match, \(SummaryText.grouped(deviated)) deviate"
            + (deviated > 0 ? " (\(groups) group\(groups == 1 ? "" : "s"))" : "")
            + (unjudged > 0 ? "; \(SummaryText.grouped(unjudged)) not named by any rule" : "")
    }

    struct Record: Encodable {
        var first: UInt16
        var last: UInt16
        var `protocol`: String
        var code: UInt8
        var result: String
        var errno: String?
        var expected: String
        var rule: String
    }
}
