import PortsweepReport
import PortsweepSweep
#if canImport(Glibc)
import Glibc
#endif

/// A one-line progress bar on stderr (a terminal): done/total, ports/s and the time left.
struct ProgressBar: Sendable {
    let sweep: Sweep

    func run() async {
        let clock = ContinuousClock()
        let start = clock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            draw(elapsed: clock.now - start)
        }
        StatusLine.shared.clear()
    }

    private func draw(elapsed: Duration) {
        let done = sweep.completed, total = max(1, sweep.total)
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let rate = seconds > 0 ? Double(done) / seconds : 0
        let left = rate > 0 ? Double(total - done) / rate : 0
        let width = 30
        let filled = min(width, done * width / total)
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let eta = rate > 0 ? "\(SummaryText.format(left, digits: 1)) s" : "?"
        StatusLine.shared.show("[\(bar)] \(done)/\(total) \(SummaryText.grouped(Int(rate))) ports/s ETA \(eta)")
    }
}
