import Metrics
import PortsweepEngine

/// swift-metrics counters of tested ports, by protocol and verdict (a no-op until the application bootstraps a
/// metrics backend, e.g. Prometheus for a long-running service).
struct SweepMetrics: Sendable {
    private let counters: [Transport: [UInt8: Counter]]

    init() {
        var counters: [Transport: [UInt8: Counter]] = [:]
        for transport in Transport.allCases {
            var byOutcome: [UInt8: Counter] = [:]
            // PASS and each single bit; a combination (UDP and TCP together) gets its counter on first use.
            for bits: UInt8 in [0, 1, 2, 4, 8, 16, 64] {
                byOutcome[bits] = Counter(label: "portsweep_ports_tested_total",
                                          dimensions: [("protocol", transport.rawValue.lowercased()),
                                                       ("result", Outcome(rawValue: bits).word)])
            }
            counters[transport] = byOutcome
        }
        self.counters = counters
    }

    func record(_ batch: [PortResult]) {
        var tally: [Transport: [UInt8: Int]] = [:]
        for result in batch { tally[result.transport, default: [:]][result.outcome.rawValue, default: 0] += 1 }
        for (transport, byOutcome) in tally {
            for (bits, count) in byOutcome {
                let counter = counters[transport]?[bits] ?? Counter(
                    label: "portsweep_ports_tested_total",
                    dimensions: [("protocol", transport.rawValue.lowercased()), ("result", Outcome(rawValue: bits).word)])
                counter.increment(by: count)
            }
        }
    }
}
