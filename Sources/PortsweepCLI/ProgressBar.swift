import PortsweepEngine
import PortsweepReport
import PortsweepSweep
#if canImport(Glibc)
import Glibc
#endif

/// A one-line progress bar on stderr (a terminal): ports done of all, ports/s and the time left. The time left
/// counts the ports waiting out a deadline (a firewall that drops them): the sweep ends no sooner than the
/// last of those, however fast the rest goes.
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
        // Ports, not tests: a port tested for TCP and UDP counts once, when both are done.
        let protocols = max(1, sweep.configuration.transports.count)
        let done = sweep.completed / protocols, total = max(1, sweep.total / protocols)
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let rate = seconds > 0 ? Double(done) / seconds : 0
        var left = rate > 0 ? Double(total - done) / rate : 0
        let deadline = sweep.lastDeadline, now = ShardProgress.now
        if deadline > now { left = max(left, Double(deadline - now) / 1000) }
        let width = 30
        let filled = min(width, done * width / total)
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let eta = rate > 0 ? "\(SummaryText.format(left, digits: 1)) s" : "?"
        StatusLine.shared.show("[\(bar)] \(done)/\(total) ports \(SummaryText.grouped(Int(rate))) ports/s ETA \(eta)")
    }
}
