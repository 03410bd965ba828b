import Metrics
import Synchronization

/// The metrics serve records on every request, each made once: a swift-metrics `Counter(label:dimensions:)` asks
/// the factory again every time it is made (Prometheus: its registry's lock, the labels hashed). Keys come from
/// small fixed sets (status codes, tcp/udp, the verdict words), so the tables stay small.
final class ServeMetrics: Sendable {
    let probesInFlight = Gauge(label: "portsweep_probes_in_flight")
    private let requestsByStatus = Mutex<[Int: Counter]>([:])
    private let checksByVerdict = Mutex<[Verdict: Counter]>([:])

    func requests(status: Int) -> Counter {
        Self.counter(in: requestsByStatus, for: status) {
            Counter(label: "portsweep_http_requests_total", dimensions: [("status", "\(status)")])
        }
    }

    func checks(protocol proto: String, status: String) -> Counter {
        Self.counter(in: checksByVerdict, for: Verdict(protocol: proto, status: status)) {
            Counter(label: "portsweep_checks_total", dimensions: [("protocol", proto), ("status", status)])
        }
    }

    private struct Verdict: Hashable, Sendable {
        let `protocol`: String, status: String
    }

    /// The table's counter for `key`, made by `make` the first time.
    private static func counter<Key: Hashable & Sendable>(in table: borrowing Mutex<[Key: Counter]>, for key: Key,
                                               _ make: @Sendable () -> Counter) -> Counter {
        table.withLock { table in
            if let counter = table[key] { return counter }
            let counter = make()
            table[key] = counter
            return counter
        }
    }
}

/// `# HELP` lines for serve's /metrics. swift-metrics has no help text and swift-prometheus's registry refuses a
/// metric registered twice with different help, so the lines are added to the exposition text, before each
/// family's `# TYPE` line (promtool's linter wants one per family). A new metric without a line here fails
/// `promtool check metrics` in the tests.
public enum ServeMetricsHelp {
    static let text: [String: String] = [
        "portsweep_bulk_limit": "The bulk sweep limits this server runs with, by limit.",
        "portsweep_bulk_probes_total": "Probes made by bulk sweeps (POST /sweep), by protocol.",
        "portsweep_bulk_refused_total": "Bulk sweep requests refused, by reason.",
        "portsweep_bulk_sweeps_in_progress": "Bulk sweeps in progress now.",
        "portsweep_checks_total": "Checks answered (GET /check_port), by protocol and status.",
        "portsweep_client_address_refused_total": "Requests whose client address could not be used (X-Forwarded-For rules).",
        "portsweep_http_requests_total": "HTTP requests answered, by status code.",
        "portsweep_probe_local_errors_total": "Checks this server could not make (its own trouble), by error.",
        "portsweep_probes_in_flight": "Checks being probed now.",
        "portsweep_ports_tested_total": "Port tests the sweep engine decided (bulk sweeps), by protocol and result.",
        "portsweep_rate_limit_clients": "Client addresses the local rate limiter remembers.",
        "portsweep_rate_limit_evictions_total": "Clients the local rate limiter forgot to make room.",
        "portsweep_rate_limit_store_fallbacks_total": "Budget decisions made locally because the shared store could not decide.",
        "portsweep_rate_limit_store_up": "1 while the shared rate-limit store decides, 0 while this instance limits on its own.",
        "portsweep_rate_limited_total": "Checks refused with 429 (budget spent).",
        "portsweep_http_connections_evicted_total": "Connections closed to make room at the connection cap.",
        "portsweep_http_connections_refused_total": "Connections refused at accept.",
        "portsweep_http_request_timeouts_total": "Requests whose head did not arrive whole in time (408).",
        "portsweep_http_connections_too_slow_total": "Connections closed for sending too slowly.",
        "portsweep_http_connections_idle_closed_total": "Idle connections closed.",
        "portsweep_http_backpressure_pauses_total": "Times reading a connection paused while its replies waited to be sent.",
        "portsweep_http_accept_errors_total": "Errors accepting connections (descriptor limits among them).",
        "portsweep_http_requests_refused_total": "Requests refused before the handler (malformed, too large).",
    ]

    /// The exposition with a `# HELP` line before each `# TYPE` line whose family is in the table.
    public static func annotate(_ exposition: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(exposition.count + 4096)
        for line in exposition.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            if line.starts(with: "# TYPE ".utf8) {
                let name = String(decoding: line.dropFirst(7).prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)
                if let help = text[name] { out += Array("# HELP \(name) \(help)\n".utf8) }
            }
            out += line
            out.append(UInt8(ascii: "\n"))
        }
        if exposition.last == UInt8(ascii: "\n") || exposition.isEmpty { out.removeLast() }
        return out
    }
}
