import Foundation
import Logging

/// swift-log's handler for portsweep's own line formats: `TIME message key=value ...` or one JSON object per line,
/// written whole with one write(2) (lines from several threads never interleave). Serve's access log goes to
/// stdout through one; notes (serving on, stopping) to stderr through another.
struct LineLogHandler: LogHandler {
    enum Stream { case stdout, stderr }

    let stream: Stream
    let json: Bool
    let timestamps: Bool
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    init(stream: Stream, json: Bool, timestamps: Bool = true) {
        self.stream = stream
        self.json = json
        self.timestamps = timestamps
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Keys whose values are numbers in JSON.
    private static let numeric: Set<String> = ["status", "port", "duration_ms"]
    /// The order of the well-known keys in a text line; others follow, sorted.
    private static let order = ["client", "peer", "method", "path", "status", "protocol", "port", "result", "duration_ms"]

    func log(event: LogEvent) {
        var all = metadata
        if let explicit = event.metadata { all.merge(explicit) { $1 } }
        let time = timestamps ? LineLogHandler.now() : nil
        let message = event.message.description
        let text = json ? jsonLine(message: message, time: time, metadata: all)
                        : textLine(message: message, time: time, metadata: all)
        let write = stream == .stdout ? Terminal.out : Terminal.error
        write(text + "\n")
    }

    private func keys(_ metadata: Logger.Metadata) -> [String] {
        LineLogHandler.order.filter { metadata[$0] != nil }
            + metadata.keys.filter { !LineLogHandler.order.contains($0) }.sorted()
    }

    /// An access record reads `TIME CLIENT METHOD PATH STATUS [PROTOCOL PORT RESULT] DURATION ms`; a note
    /// reads `TIME message`.
    private func textLine(message: String, time: String?, metadata: Logger.Metadata) -> String {
        var parts: [String] = time.map { [$0] } ?? []
        if message == "request" {
            for key in keys(metadata) where key != "duration_ms" {
                let value = "\(metadata[key]!)"
                parts.append(key == "peer" ? "via \(value)" : value)
            }
            if let duration = metadata["duration_ms"] { parts.append("\(duration) ms") }
        } else {
            parts.append(message)
            for key in keys(metadata) { parts.append("\(key)=\(metadata[key]!)") }
        }
        return parts.joined(separator: " ")
    }

    private func jsonLine(message: String, time: String?, metadata: Logger.Metadata) -> String {
        var members: [String] = []
        if let time { members.append("\"time\":\(LineLogHandler.quoted(time))") }
        members.append("\"event\":\(LineLogHandler.quoted(message == "request" ? "request" : "note"))")
        if message != "request" { members.append("\"message\":\(LineLogHandler.quoted(message))") }
        for key in keys(metadata) {
            let value = "\(metadata[key]!)"
            let number = LineLogHandler.numeric.contains(key) && Double(value) != nil
            members.append("\(LineLogHandler.quoted(key)):\(number ? value : LineLogHandler.quoted(value))")
        }
        return "{" + members.joined(separator: ",") + "}"
    }

    static func quoted(_ text: String) -> String {
        let data = (try? JSONEncoder().encode(text)) ?? Data("\"\"".utf8)
        return String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\\/", with: "/")
    }

    private static let timeStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
    static func now() -> String { Date().formatted(timeStyle) }
}
