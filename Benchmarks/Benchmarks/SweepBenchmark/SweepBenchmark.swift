import Benchmark
import LoadTools
import PortsweepEngine
import PortsweepSweep
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// Ports per second of the full TCP test (listen, connect, accept, a line each way, close) on loopback, through
/// the same public API the CLI uses. Run in a fresh network namespace (./run does) so no TIME_WAIT counts.
let benchmarks: @Sendable () -> Void = {
    signal(SIGPIPE, SIG_IGN)
    _ = DescriptorBudget.raise()
    let group = try! EventLoopGroup()

    func sweep(_ spec: String, _ transports: Set<Transport> = [.tcp], _ benchmark: Benchmark) async throws {
        let sweep = try Sweep(SweepConfiguration(ports: try PortSet(parsing: spec), transports: transports), group: group)
        benchmark.startMeasurement()
        let (results, summary) = try await sweep.run()
        benchmark.stopMeasurement()
        // USED is allowed: the benchmark host (swift package, in the same namespace) holds a few UDP ports of
        // the ephemeral range itself. Anything else on loopback is a bug.
        let bad = results.filter { !$0.outcome.isPass && $0.outcome != .used }
        precondition(bad.isEmpty, "loopback ports did not pass: \(bad.prefix(10))")
        blackHole(results)
        benchmark.measurement(.custom("ports/s", polarity: .prefersLarger, useScalingFactor: false),
                              Int(summary.portsPerSecond))
    }

    let portsPerSecond = BenchmarkMetric.custom("ports/s", polarity: .prefersLarger, useScalingFactor: false)
    Benchmark.defaultConfiguration.thresholds = Tolerances.standard(timings: [portsPerSecond])

    // mallocCountTotal is per iteration, i.e. per 10,000 ports.
    Benchmark("TCP sweep of 10,000 loopback ports",
              configuration: .init(metrics: [.wallClock, .mallocCountTotal, .syscalls, portsPerSecond],
                                   maxDuration: .seconds(20), maxIterations: 20)) { benchmark in
        try await sweep("20000-29999", [.tcp], benchmark)
    }

    Benchmark("TCP sweep of 1-65535",
              configuration: .init(metrics: [.wallClock, portsPerSecond], maxDuration: .seconds(30), maxIterations: 5)) { benchmark in
        try await sweep("1-65535", [.tcp], benchmark)
    }

    // UDP, one shared client socket per loop; mallocCountTotal per 10,000 ports again.
    Benchmark("UDP sweep of 10,000 loopback ports",
              configuration: .init(metrics: [.wallClock, .mallocCountTotal, portsPerSecond],
                                   maxDuration: .seconds(20), maxIterations: 20)) { benchmark in
        try await sweep("20000-29999", [.udp], benchmark)
    }

    Benchmark("UDP sweep of 1024-65535",
              configuration: .init(metrics: [.wallClock, portsPerSecond], maxDuration: .seconds(30), maxIterations: 5)) { benchmark in
        try await sweep("1024-65535", [.udp], benchmark)
    }

    // ports/s here counts tests: a port tested for TCP and UDP counts twice.
    Benchmark("TCP and UDP sweep of 1-65535",
              configuration: .init(metrics: [.wallClock, portsPerSecond], maxDuration: .seconds(30), maxIterations: 5)) { benchmark in
        try await sweep("1-65535", [.tcp, .udp], benchmark)
    }
}
