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
