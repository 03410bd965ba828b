import Foundation
import PortsweepEngine
import PortsweepListen
import PortsweepReport
import Synchronization
import UVLoop

/// The listen log on stdout: a line per connection or datagram, start-up and shutdown notes; text or JSON Lines.
final class ListenLog: Sendable {
    let format: LogFormat
    let timestamps: Bool
    private let encoder: JSONEncoder
    private let buffer = Mutex("")

    init(format: LogFormat, timestamps: Bool) {
        self.format = format
        self.timestamps = timestamps
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        self.encoder = encoder
    }

    private static let timeStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
    private var now: String { Date().formatted(ListenLog.timeStyle) }

    func note(_ text: String) {
        switch format {
        case .text: emit((timestamps ? now + " " : "") + text)
        case .json: emit(json(LogRecord(time: timestamps ? now : nil, event: "note", message: text)))
        }
        flush()
    }

    func write(_ event: ListenEvent) {
        let time = timestamps ? now : nil
        switch (format, event) {
        case (.text, .connection(let c)):
            emit((time.map { $0 + " " } ?? "") + "TCP \(c.localPort) \(c.client.map { "\($0)" } ?? "?") in=\(c.bytesIn) out=\(c.bytesOut)"
                 + " requests=\(c.requests) \(SummaryText.format(ListenLog.seconds(c.duration), digits: 3))s \(c.end)")
        case (.text, .datagram(let d)):
            emit((time.map { $0 + " " } ?? "") + "UDP \(d.localPort) \(d.client.map { "\($0)" } ?? "?") in=\(d.bytesIn) out=\(d.bytesOut)")
        case (.text, .rejected(let port, let client, let reason)):
            emit((time.map { $0 + " " } ?? "") + "TCP \(port) \(client.map { "\($0)" } ?? "?") rejected: \(reason)")
        case (.json, .connection(let c)):
            emit(json(LogRecord(time: time, event: "connection", protocol: "TCP", port: c.localPort,
                                client: c.client.map { "\($0)" }, bytesIn: c.bytesIn, bytesOut: c.bytesOut,
                                requests: c.requests, duration: ListenLog.seconds(c.duration), end: c.end)))
        case (.json, .datagram(let d)):
            emit(json(LogRecord(time: time, event: "datagram", protocol: "UDP", port: d.localPort,
                                client: d.client.map { "\($0)" }, bytesIn: d.bytesIn, bytesOut: d.bytesOut)))
        case (.json, .rejected(let port, let client, let reason)):
            emit(json(LogRecord(time: time, event: "rejected", protocol: "TCP", port: port,
                                client: client.map { "\($0)" }, message: reason)))
        }
    }

    /// Writes a record as it is (worker reports), at once.
    func record(_ record: LogRecord) {
        emit(json(record))
        flush()
    }

    private func json(_ record: LogRecord) -> String {
        String(decoding: (try? encoder.encode(record)) ?? Data(), as: UTF8.self)
    }

    private func emit(_ line: String) {
        let full = buffer.withLock { buffer -> Bool in
            buffer += line + "\n"
            return buffer.utf8.count > 1 << 14
        }
        if full { flush() }
    }

    /// Writes what is buffered (also called after each batch of events, so the log stays live).
    func flush() {
        let text = buffer.withLock { buffer -> String in
            defer { buffer = "" }
            return buffer
        }
        if !text.isEmpty { StatusLine.shared.out(text) }
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// The start-up error, one line per run of ports with the same problem.
    static func explain(_ error: ListenError, bind: IPAddress) -> String {
        switch error {
        case .tooManyPorts(let needed, let available):
            return "portsweep: cannot listen: \(needed) sockets are needed but the descriptor limit leaves \(available);"
                + " listen on fewer ports (or raise RLIMIT_NOFILE)\n"
        case .portsFailed(let failures):
            var lines: [String] = []
            var run: (first: ListenFailure, last: UInt16)?
            func close() {
                guard let (first, last) = run else { return }
                let ports = first.port == last ? "port \(first.port)" : "ports \(first.port)-\(last)"
                var line = "portsweep: cannot listen on \(first.transport.rawValue) \(ports) of \(bind): \(first.reason)"
                if first.errno == EADDRINUSE { line += " (Failed to start port listener)" }
                lines.append(line)
            }
            for failure in failures {
                if let current = run, current.first.transport == failure.transport, current.first.errno == failure.errno,
                   failure.port == current.last &+ 1 {
                    run = (current.first, failure.port)
                } else {
                    close()
                    run = (failure, failure.port)
                }
            }
            close()
            return lines.joined(separator: "\n") + "\n"
        }
    }
}

/// One JSON Lines record of the listen log (and of a worker's report to its parent).
struct LogRecord: Codable {
    var time: String?
    var event: String
    var `protocol`: String?
    var port: UInt16?
    var client: String?
    var bytesIn: Int?
    var bytesOut: Int?
    var requests: Int?
    var duration: Double?
    var end: String?
    var message: String?

    enum CodingKeys: String, CodingKey {
        case time, event, `protocol`, port, client, requests, duration, end, message
        case bytesIn = "bytes_in", bytesOut = "bytes_out"
    }
}

/// Counts for the status line and the summary.
final class ListenStats: Sendable {
    private struct State {
        var connections = 0
        var datagrams = 0
        var rejected = 0
        var perPort: [UInt16: Int] = [:]
        var lastClient: String?
    }

    private let state = Mutex(State())
    private let started = ContinuousClock.now
    let listening: Int

    init(listening: Int) { self.listening = listening }

    func record(_ event: ListenEvent) {
        state.withLock { state in
            switch event {
            case .connection(let c):
                state.connections += 1
                state.perPort[c.localPort, default: 0] += 1
                if let client = c.client { state.lastClient = "\(client)" }
            case .datagram(let d):
                state.datagrams += 1
                state.perPort[d.localPort, default: 0] += 1
                if let client = d.client { state.lastClient = "\(client)" }
            case .rejected:
                state.rejected += 1
            }
        }
    }

    var uptime: String { SummaryText.format(ListenLog.seconds(ContinuousClock.now - started), digits: 1) + " s" }

    func showStatus() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            let s = state.withLock { $0 }
            StatusLine.shared.show("\(Self.count(s.connections, "connection")), \(Self.count(s.datagrams, "datagram"));"
                                   + " last client \(s.lastClient ?? "none"); up \(uptime);"
                                   + " listening on \(Self.count(listening, "port"))")
        }
        StatusLine.shared.clear()
    }

    static func count(_ n: Int, _ noun: String) -> String { "\(n) \(noun)\(n == 1 ? "" : "s")" }

    func summary() -> String {
        let s = state.withLock { $0 }
        let busiest = s.perPort.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(5)
            .map { "\($0.key) (\($0.value))" }.joined(separator: ", ")
        return "portsweep: \(Self.count(s.connections, "connection")), \(Self.count(s.datagrams, "datagram"))"
            + (s.rejected > 0 ? ", \(s.rejected) rejected" : "")
            + "; busiest ports: \(busiest.isEmpty ? "none" : busiest); last client: \(s.lastClient ?? "none"); uptime \(uptime)"
    }
}
