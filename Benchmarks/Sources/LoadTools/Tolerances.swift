import Benchmark

/// What `./run thresholds check` lets pass: the tolerances applied against the p90 values recorded in
/// Thresholds/ (`./run thresholds update`), and between two baselines.
public enum Tolerances {
    /// Counts, which move less than times but still with how results happen to be batched: 20%.
    static let counts: Set<BenchmarkMetric> = [.mallocCountTotal, .syscalls]

    /// This machine is shared and noisy (2 cores, other jobs beside): a rate or a time must move by more than 25%
    /// at p90 (the percentile the static check reads) or at the median before it counts (p90 of five
    /// samples is nearly their extreme: two quiet runs here differed by up to 21%); allocations per 10,000 ports
    /// moved by 9% between two runs (results batched differently), so counts get 20%.
    public static func of(_ metrics: [BenchmarkMetric]) -> [BenchmarkMetric: BenchmarkThresholds] {
        let timing = BenchmarkThresholds(relative: [.p50: 25, .p90: 25])
        let count = BenchmarkThresholds(relative: [.p50: 20, .p90: 20])
        return Dictionary(uniqueKeysWithValues: metrics.map { ($0, counts.contains($0) ? count : timing) })
    }
}

extension Benchmark.Configuration {
    /// This configuration with the tolerances of its own metrics (see `Tolerances`).
    public var withTolerances: Benchmark.Configuration {
        var configuration = self
        configuration.thresholds = Tolerances.of(metrics)
        return configuration
    }
}
