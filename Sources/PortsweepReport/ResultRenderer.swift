import Foundation
public import PortsweepEngine
import UVLoop

/// The output formats of a sweep.
public enum OutputFormat: String, Sendable, CaseIterable {
    case text, json, csv
    /// One self-contained HTML document (`HTMLReport`), written once the sweep has ended.
    case html
    /// JUnit XML (`JUnitReport`), written once the sweep has ended: a test case per policy rule, or per group.
    case junit
}

/// How results are printed.
public struct RenderOptions: Sendable {
    public var format: OutputFormat = .text
    /// Consecutive ports with the same verdict share a line (or a JSON/CSV record).
    public var grouped = true
    /// Print `TCP`/`UDP` on text lines.
    public var showProtocol = false
    /// Print the numeric code instead of the word (text).
    public var errorCodes = false
    /// Add the errno behind non-PASS verdicts (text; JSON and CSV always carry it).
    public var detailed = false
    /// Both TCP and UDP are tested: text merges the protocols where they agree (`[PASS] TCP/UDP 80-90`).
    public var bothProtocols = false

    public init(format: OutputFormat = .text, grouped: Bool = true, showProtocol: Bool = false,
                errorCodes: Bool = false, detailed: Bool = false, bothProtocols: Bool = false) {
        self.bothProtocols = bothProtocols
        self.format = format
        self.grouped = grouped
        self.showProtocol = showProtocol
        self.errorCodes = errorCodes
        self.detailed = detailed
    }
}

/// Turns results, in port order, into output lines as they arrive: grouped text as the Incoming Port Tester
/// printed it (`[PASS] 8080-8085`, `[FAIL] TCP 25`), JSON Lines, or CSV.
public struct ResultRenderer {
    public let options: RenderOptions
    private var grouper: Grouper
    private var pairGrouper: ProtocolPairGrouper
    private var pairs: Bool { options.bothProtocols && options.format == .text && options.grouped }
    private let encoder: JSONEncoder
    private var headerDone = false

    public init(options: RenderOptions) {
        self.options = options
        // JSON and CSV records always carry the errno, so they split groups by it as well.
        grouper = Grouper(byErrno: options.detailed || options.format != .text)
        pairGrouper = ProtocolPairGrouper(byErrno: options.detailed)
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]  // stable key order for scripts that diff
    }

    /// Lines to print before any result.
    public mutating func header() -> [String] {
        guard options.format == .csv, !headerDone else { return [] }
        headerDone = true
        return [options.grouped ? "first,last,protocol,code,result,errno,holder" : "port,protocol,code,result,errno,holder"]
    }

    /// The lines a result completes (none while a group is still growing).
    public mutating func add(_ result: PortResult) -> [String] {
        if !options.grouped {
            return [line(PortGroup(transport: result.transport, first: result.port, last: result.port,
                                   outcome: result.outcome, errno: result.errno, holder: result.holder))]
        }
        if pairs { return pairGrouper.add(result).map(line) }
        return grouper.add(result).map { [line($0)] } ?? []
    }

    /// The lines of the groups still open.
    public mutating func finish() -> [String] {
        (pairs ? pairGrouper.finish() : grouper.finish()).map(line)
    }

    public func line(_ group: PortGroup) -> String {
        let errnoName = group.errno != 0 ? UVError.name(ofErrno: group.errno) : ""
        switch options.format {
        case .text:
            let verdict = options.errorCodes ? "\(group.outcome.rawValue)" : group.outcome.word
            var text = "[\(verdict)] "
            if options.showProtocol || options.bothProtocols { text += "\(group.protocolText) " }
            text += group.portText
            if options.detailed && !errnoName.isEmpty {
                text += " (\(errnoName)" + (group.holder.map { ", \($0)" } ?? "") + ")"
            }
            return text
        case .json:
            let record = JSONRecord(
                port: options.grouped ? nil : group.first,
                first: options.grouped ? group.first : nil,
                last: options.grouped ? group.last : nil,
                protocol: group.transport.rawValue, code: group.outcome.rawValue, result: group.outcome.word,
                errno: errnoName.isEmpty ? nil : errnoName, holder: group.holder?.description)
            let data = (try? encoder.encode(record)) ?? Data()
            return String(decoding: data, as: UTF8.self)
        case .html, .junit:
            return ""  // the document is written whole by HTMLReport or JUnitReport
        case .csv:
            let ports = options.grouped ? "\(group.first),\(group.last)" : "\(group.first)"
            return "\(ports),\(group.transport.rawValue),\(group.outcome.rawValue),\(group.outcome.word),\(errnoName),"
                + ResultRenderer.csvField(group.holder?.description ?? "")
        }
    }
}

extension ResultRenderer {
    /// A CSV field, quoted when it holds a comma or a quote (a holder: `held by nginx, pid 812`).
    public static func csvField(_ text: String) -> String {
        guard text.contains(",") || text.contains("\"") else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

/// One JSON Lines record: a port (`port`) or a group (`first`, `last`).
struct JSONRecord: Codable, Equatable {
    var port: UInt16?
    var first: UInt16?
    var last: UInt16?
    var `protocol`: String
    var code: UInt8
    var result: String
    var errno: String?
    var holder: String?
}
