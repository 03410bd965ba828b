import Metrics
import Synchronization

/// The metrics serve records on every request, each made once: a swift-metrics `Counter(label:dimensions:)` asks
/// the factory again every time it is made (Prometheus: its registry's lock, the labels hashed). Keys come from
/// small fixed sets (status codes, tcp/udp, the verdict words), so the tables stay small.
final class ServeMetrics: Sendable {
    let probesInFlight = Gauge(label: "portsweep_probes_in_flight")
    private let requestsByStatus = Mutex<[Int: Counter]>([:])
    private let checksByVerdict = Mutex<[String: Counter]>([:])

    func requests(status: Int) -> Counter {
        requestsByStatus.withLock { table in
            if let counter = table[status] { return counter }
            let counter = Counter(label: "portsweep_http_requests_total", dimensions: [("status", "\(status)")])
            table[status] = counter
            return counter
        }
    }

    func checks(protocol proto: String, status: String) -> Counter {
        checksByVerdict.withLock { table in
            let key = proto + " " + status
            if let counter = table[key] { return counter }
            let counter = Counter(label: "portsweep_checks_total", dimensions: [("protocol", proto), ("status", status)])
            table[key] = counter
            return counter
        }
    }
}
