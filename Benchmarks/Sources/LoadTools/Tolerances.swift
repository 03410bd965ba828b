import Benchmark

/// What `./run thresholds check` lets pass: the tolerances applied against the p90 values recorded in
/// Thresholds/ (`./run thresholds update`), and between two baselines.
public enum Tolerances {
    /// This machine is shared and noisy (2 cores, other jobs beside): a rate or a time must move by more than 15%
    /// at p90 (the percentile the static check reads) or at the median before it counts. Counts of allocations
    /// and system calls hardly move between runs: 3%.
    public static func standard(timings: [BenchmarkMetric]) -> [BenchmarkMetric: BenchmarkThresholds] {
        let timing = BenchmarkThresholds(relative: [.p50: 15, .p90: 15])
        let count = BenchmarkThresholds(relative: [.p50: 3, .p90: 3])
        var tolerances: [BenchmarkMetric: BenchmarkThresholds] = [.wallClock: timing, .mallocCountTotal: count,
                                                                  .syscalls: count]
        for metric in timings { tolerances[metric] = timing }
        return tolerances
    }
}
