import Foundation
import PortsweepEngine
import PortsweepHTTP
public import PortsweepListen
import Synchronization
import UVLoop

/// What the listen dashboard shows: the listen's state, its counters, the ports it holds or could not hold, the
/// ports hit in the last `hotSeconds`, and a bounded tail of the log. Fed by the command with every listen
/// event (at whatever rate connections come) and read by each page's stream a few times a second. Memory is
/// bounded whatever the load or the uptime: a counter per port and protocol, one entry per port hit recently,
/// and `tail` log lines; a page is sent at most `linesPerUpdate` lines an update, and told how many it missed.
public final class ListenBoard: Sendable {
    public enum Phase: String, Sendable {
        case stopped, listening, error
    }

    public static let tail = 1000
    public static let linesPerUpdate = 200
    public static let hotSeconds = 10.0

    struct Line: Encodable {
        var seq: Int
        var time: Double
        var `protocol`: String
        var port: Int
        var client: String
        var text: String
    }

    private struct State {
        var phase = Phase.stopped
        var reason = ""
        var description = ""
        var form: ListenForm?
        var held: [Transport: PortSet] = [:]
        var failures: [ListenFailure] = []
        var connections = 0, datagrams = 0, rejected = 0
        var lastClient: String?
        var listeningSince: ContinuousClock.Instant?
        /// Per protocol (TCP 0, UDP 1) << 16 | port: connections or datagrams.
        var perPort = [Int32](repeating: 0, count: 2 << 16)
        /// Same key: when last hit (the monotonic clock, seconds).
        var hot: [Int: Double] = [:]
        var log = [Line?](repeating: nil, count: ListenBoard.tail)
        var seq = 0
    }

    private let state = Mutex(State())
    private static let origin = ContinuousClock.now
    private static var clock: Double { seconds(ContinuousClock.now - origin) }

    public init() {}

    // MARK: the command's side

    public func listening(_ form: ListenForm, _ configuration: ListenConfiguration, failures: [ListenFailure], description: String) {
        state.withLock { state in
            state.phase = .listening
            state.reason = ""
            state.form = form
            state.description = description
            state.failures = failures
            state.held = [:]
            for transport in configuration.transports {
                var ports = configuration.ports
                for failure in failures where failure.transport == transport { ports.remove(failure.port) }
                state.held[transport] = ports
            }
            state.listeningSince = .now
        }
    }

    public func stopped(reason: String = "") {
        state.withLock { state in
            state.phase = reason.isEmpty ? .stopped : .error
            state.reason = reason
            state.held = [:]
            state.listeningSince = nil
            if reason.isEmpty { state.failures = [] }
        }
    }

    /// A listen that could not start: its reason, and the failures it had.
    public func failed(_ reason: String, failures: [ListenFailure] = []) {
        state.withLock { state in
            state.phase = .error
            state.reason = reason
            state.failures = failures
            state.held = [:]
            state.listeningSince = nil
        }
    }

    public var phase: Phase { state.withLock { $0.phase } }

    public func record(_ event: ListenEvent) {
        let now = Self.clock
        state.withLock { state in
            switch event {
            case .connection(let c):
                state.connections += 1
                hit(&state, 0, c.localPort, c.client, now: now)
                append(&state, c.time, "TCP", c.localPort, c.client, "in=\(c.bytesIn) out=\(c.bytesOut) requests=\(c.requests) "
                       + String(format: "%.3fs", Self.seconds(c.duration)) + " \(c.end)")
            case .datagram(let d):
                state.datagrams += 1
                hit(&state, 1, d.localPort, d.client, now: now)
                append(&state, d.time, "UDP", d.localPort, d.client,
                       "in=\(d.bytesIn) out=\(d.bytesOut)" + (d.suppressed.map { " no reply: \($0.rawValue)" } ?? ""))
            case .rejected(let port, let client, let reason, let time):
                state.rejected += 1
                append(&state, time, "TCP", port, client, "rejected: \(reason)")
            case .note(let text, let time):
                append(&state, time, "", 0, nil, text)
            }
        }
    }

    private func hit(_ state: inout State, _ t: Int, _ port: UInt16, _ client: SocketAddress?, now: Double) {
        let key = t << 16 | Int(port)
        state.perPort[key] &+= 1
        state.hot[key] = now
        if let client { state.lastClient = "\(client)" }
    }

    private func append(_ state: inout State, _ time: Double, _ proto: String, _ port: UInt16, _ client: SocketAddress?, _ text: String) {
        state.seq += 1
        state.log[state.seq % Self.tail] = Line(seq: state.seq, time: time, protocol: proto, port: Int(port),
                                                client: client.map { "\($0)" } ?? "", text: text)
    }

    // MARK: the page's side

    /// The state, the log lines after `cursor` (a log sequence number), the grid; and the cursor for next time.
    public func update(since cursor: Int) -> (json: [UInt8], cursor: Int) {
        let now = Self.clock
        let update = state.withLock { state -> Update in
            // Ports hit long enough ago cool down (and leave the table: it holds only the recent ones).
            state.hot = state.hot.filter { now - $0.value < Self.hotSeconds }
            return Update(state, since: cursor, now: now)
        }
        return ((try? JSONEncoder().encode(update)).map(Array.init) ?? Array("{}".utf8), update.seq)
    }

    private struct Update: Encodable {
        var phase: String
        var reason: String
        var description: String
        var form: ListenForm?
        var connections: Int, datagrams: Int, rejected: Int
        var lastClient: String?
        var uptime: Double?
        var busiest: [[String]]
        /// `[protocol, first, last, state, detail]`: listening, used, error (the base), hit (the last seconds).
        var grid: [[String]]
        var lines: [Line]
        /// Lines the page will not see: more came since its last update than one update carries, or the
        /// tail no longer holds them.
        var skipped: Int
        var seq: Int

        init(_ state: State, since cursor: Int, now: Double) {
            phase = state.phase.rawValue
            reason = state.reason
            description = state.description
            form = state.form
            connections = state.connections
            datagrams = state.datagrams
            rejected = state.rejected
            lastClient = state.lastClient
            uptime = state.listeningSince.map { ListenBoard.seconds(ContinuousClock.now - $0) }
            seq = state.seq
            let first = max(cursor + 1, state.seq - ListenBoard.linesPerUpdate + 1, 1)
            skipped = max(0, first - cursor - 1)
            lines = first <= state.seq ? (first...state.seq).compactMap { state.log[$0 % ListenBoard.tail] } : []
            var top: [(Int, Int32)] = []
            for (key, n) in state.perPort.enumerated() where n > 0 { top.append((key, n)) }
            top.sort { ($0.1, $1.0) > ($1.1, $0.0) }
            busiest = top.prefix(10).map { [$0.0 >> 16 == 0 ? "TCP" : "UDP", "\($0.0 & 0xffff)", "\($0.1)"] }
            grid = []
            for (transport, ports) in state.held.sorted(by: { $0.key < $1.key }) {
                grid += Self.runs(Array(ports).map(Int.init)).map { [transport.rawValue, "\($0.0)", "\($0.1)", "listening", ""] }
            }
            for failure in state.failures {
                grid.append([failure.transport.rawValue, "\(failure.port)", "\(failure.port)",
                             failure.errno == EADDRINUSE ? "held by another program" : "error", failure.reason])
            }
            for (t, name) in ["TCP", "UDP"].enumerated() {
                let ports = state.hot.keys.filter { $0 >> 16 == t }.map { $0 & 0xffff }.sorted()
                grid += Self.runs(ports).map { [name, "\($0.0)", "\($0.1)", "hit recently", ""] }
            }
        }

        static func runs(_ sorted: [Int]) -> [(Int, Int)] {
            var out: [(Int, Int)] = []
            for port in sorted {
                if let last = out.last, last.1 + 1 == port { out[out.count - 1].1 = port } else { out.append((port, port)) }
            }
            return out
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
