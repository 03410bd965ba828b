import Foundation
import PortsweepEngine
import PortsweepHTTP
import PortsweepListen
import PortsweepReport
import Synchronization
import UVLoop

/// The listen log on stdout: a line per connection or datagram, start-up and shutdown notes; text or JSON Lines.
/// Each line carries the time of its event (when the connection ended, when the datagram came), not the time
/// it is printed.
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
    static func stamp(_ time: Double) -> String { Date(timeIntervalSince1970: time).formatted(timeStyle) }

    func note(_ text: String, time: Double = WallClock.now) {
        switch format {
        case .text: emit(prefix(time) + text)
        case .json: emit(json(LogRecord(time: timestamps ? ListenLog.stamp(time) : nil, event: "note", message: text)))
        }
        flush()
    }

    private func prefix(_ time: Double) -> String { timestamps ? ListenLog.stamp(time) + " " : "" }

    func write(_ event: ListenEvent) {
        switch (format, event) {
        case (.text, .connection(let c)):
            emit(prefix(c.time) + "TCP \(c.localPort) \(c.client.map { "\($0)" } ?? "?") in=\(c.bytesIn) out=\(c.bytesOut)"
                 + " requests=\(c.requests) \(SummaryText.format(ListenLog.seconds(c.duration), digits: 3))s \(c.end)")
        case (.text, .datagram(let d)):
            emit(prefix(d.time) + "UDP \(d.localPort) \(d.client.map { "\($0)" } ?? "?") in=\(d.bytesIn) out=\(d.bytesOut)"
                 + (d.suppressed.map { " no reply: \($0.rawValue)" } ?? ""))
        case (.text, .rejected(let port, let client, let reason, let time)):
            emit(prefix(time) + "TCP \(port) \(client.map { "\($0)" } ?? "?") rejected: \(reason)")
        case (.text, .note(let text, let time)):
            emit(prefix(time) + text)
        case (.json, .connection(let c)):
            emit(json(LogRecord(time: stamp(c.time), event: "connection", protocol: "TCP", port: c.localPort,
                                client: c.client.map { "\($0)" }, bytesIn: c.bytesIn, bytesOut: c.bytesOut,
                                requests: c.requests, duration: ListenLog.seconds(c.duration), end: c.end)))
        case (.json, .datagram(let d)):
            emit(json(LogRecord(time: stamp(d.time), event: "datagram", protocol: "UDP", port: d.localPort,
                                client: d.client.map { "\($0)" }, bytesIn: d.bytesIn, bytesOut: d.bytesOut,
                                noReply: d.suppressed?.rawValue)))
        case (.json, .rejected(let port, let client, let reason, let time)):
            emit(json(LogRecord(time: stamp(time), event: "rejected", protocol: "TCP", port: port,
                                client: client.map { "\($0)" }, message: reason)))
        case (.json, .note(let text, let time)):
            emit(json(LogRecord(time: stamp(time), event: "note", message: text)))
        }
    }

    private func stamp(_ time: Double) -> String? { timestamps ? ListenLog.stamp(time) : nil }

    /// JSON only: the summary as the log's last record (the text summary goes to stderr).
    func summary(_ stats: ListenStats, counters: ListenCounters) {
        guard format == .json else { return }
        let s = stats.snapshot
        var record = LogRecord(time: stamp(WallClock.now), event: "summary")
        record.connections = s.connections
        record.datagrams = s.datagrams
        record.rejected = s.rejected
        record.lastClient = s.lastClient
        record.uptime = ListenLog.seconds(ContinuousClock.now - stats.started)
        record.busiest = stats.busiest.map { LogRecord.Busy(port: $0.0, count: $0.1) }
        record.limits = counters
        emit(json(record))
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

    /// `101 TCP and UDP ports of 0.0.0.0 (8000-8100), reply http`, and how it is held.
    static func describe(_ configuration: ListenConfiguration, start: ListenStart, descriptors: DescriptorBudget) -> String {
        let labels = configuration.transports.sorted().map(\.rawValue).joined(separator: " and ")
        let count = configuration.ports.count
        var text = "\(count) \(labels) port\(count == 1 ? "" : "s") of \(configuration.bind) (\(configuration.ports)),"
            + " reply \(configuration.reply.rawValue)"
        if !start.failures.isEmpty {
            text += "; \(start.failures.count) of \(configuration.socketsNeeded) could not be held (listed above)"
        }
        if start.workers > 0 {
            text += ", in \(start.workers) worker processes (the descriptor limit is \(descriptors.soft) per process)"
        }
        return text
    }

    /// The ports that could not be held: one line per run of ports with the same problem.
    static func explain(_ failures: [ListenFailure], bind: IPAddress) -> String {
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
               current.first.holder == failure.holder, failure.port == current.last &+ 1 {
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

/// One JSON Lines record of the listen log.
struct LogRecord: Codable {
    struct Busy: Codable {
        var port: UInt16
        var count: Int
    }

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
    var noReply: String?
    // The summary record.
    var connections: Int?
    var datagrams: Int?
    var rejected: Int?
    var lastClient: String?
    var uptime: Double?
    var busiest: [Busy]?
    var limits: ListenCounters?

    init(time: String? = nil, event: String, protocol: String? = nil, port: UInt16? = nil, client: String? = nil,
         bytesIn: Int? = nil, bytesOut: Int? = nil, requests: Int? = nil, duration: Double? = nil, end: String? = nil,
         message: String? = nil, noReply: String? = nil) {
        self.time = time
        self.event = event
        self.protocol = `protocol`
        self.port = port
        self.client = client
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.requests = requests
        self.duration = duration
        self.end = end
        self.message = message
        self.noReply = noReply
    }

    enum CodingKeys: String, CodingKey {
        case time, event, `protocol`, port, client, requests, duration, end, message, connections, datagrams, rejected
        case uptime, busiest, limits
        case bytesIn = "bytes_in", bytesOut = "bytes_out", noReply = "no_reply", lastClient = "last_client"
    }
}

/// Counts for the status line and the summary.
final class ListenStats: Sendable {
    struct State {
        var connections = 0
        var datagrams = 0
        var rejected = 0
        var perPort: [UInt16: Int] = [:]
        var lastClient: String?
    }

    private let state = Mutex(State())
    let started = ContinuousClock.now
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
            case .note:
                break
            }
        }
    }

    var snapshot: State { state.withLock { $0 } }

    var busiest: [(UInt16, Int)] {
        snapshot.perPort.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(5).map { ($0.key, $0.value) }
    }

    var uptime: String { SummaryText.format(ListenLog.seconds(ContinuousClock.now - started), digits: 1) + " s" }

    func showStatus() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            let s = snapshot
            StatusLine.shared.show("\(Self.count(s.connections, "connection")), \(Self.count(s.datagrams, "datagram"));"
                                   + " last client \(s.lastClient ?? "none"); up \(uptime);"
                                   + " listening on \(Self.count(listening, "port"))")
        }
        StatusLine.shared.clear()
    }

    static func count(_ n: Int, _ noun: String) -> String { "\(n) \(noun)\(n == 1 ? "" : "s")" }

    func summary(_ counters: ListenCounters = ListenCounters()) -> String {
        let s = snapshot
        let busiest = self.busiest.map { "\($0.0) (\($0.1))" }.joined(separator: ", ")
        let limits = counters.summary
        return "portsweep: \(Self.count(s.connections, "connection")), \(Self.count(s.datagrams, "datagram"))"
            + (s.rejected > 0 ? ", \(s.rejected) rejected" : "")
            + "; busiest ports: \(busiest.isEmpty ? "none" : busiest); last client: \(s.lastClient ?? "none"); uptime \(uptime)"
            + (limits.isEmpty ? "" : "; limits: \(limits)")
    }
}
