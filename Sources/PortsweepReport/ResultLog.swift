import Foundation
public import PortsweepEngine
import UVLoop

/// A sweep's results as JSON Lines (`--format json`, grouped or not), read back: what `--resume` skips.
public enum ResultLog {
    /// A line that is not one of our records.
    public struct BadLine: Error, CustomStringConvertible {
        public let line: Int
        public let reason: String
        public var description: String { "line \(line): \(reason)" }
    }

    /// Every port's verdict in `text`, a later record of a port replacing an earlier one. Blank lines are
    /// skipped; a last line cut short (the run that wrote it was killed mid-write) is dropped, any other bad
    /// line is an error.
    public static func read(_ text: String) throws(BadLine) -> [PortResult] {
        let decoder = JSONDecoder()
        var byKey: [Int: PortResult] = [:]
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        for (index, line) in lines.enumerated() where !line.allSatisfy(\.isWhitespace) {
            let isLast = index == lines.count - 1
            let record: JSONRecord
            do {
                record = try decoder.decode(JSONRecord.self, from: Data(line.utf8))
            } catch {
                if isLast { break }
                throw BadLine(line: index + 1, reason: "not a JSON record of a sweep")
            }
            for result in try results(of: record, line: index + 1) {
                byKey[Int(result.port) << 1 | (result.transport == .tcp ? 0 : 1)] = result
            }
        }
        return byKey.keys.sorted().map { byKey[$0]! }
    }

    private static func results(of record: JSONRecord, line: Int) throws(BadLine) -> [PortResult] {
        guard let transport = Transport(rawValue: record.protocol.uppercased()) else {
            throw BadLine(line: line, reason: "protocol '\(record.protocol)' is not TCP or UDP")
        }
        guard let first = record.port ?? record.first, let last = record.port ?? record.last ?? record.first,
              first >= 1, first <= last else {
            throw BadLine(line: line, reason: "no port, or first and last out of order")
        }
        let outcome = Outcome(rawValue: record.code)
        guard outcome.word == record.result.uppercased() else {
            throw BadLine(line: line, reason: "code \(record.code) is not result '\(record.result)'")
        }
        let errno = record.errno.map(errnoValue) ?? 0
        return (first...last).map { PortResult(port: $0, transport: transport, outcome: outcome, errno: errno) }
    }

    /// The errno behind a name as printed (`ETIMEDOUT`); 0 for a name this system does not have.
    private static let errnoByName: [String: Int32] = {
        var names: [String: Int32] = [:]
        for value in Int32(1)...Int32(200) { names[UVError.name(ofErrno: value)] = value }
        return names
    }()

    private static func errnoValue(_ name: String) -> Int32 { errnoByName[name] ?? 0 }
}
