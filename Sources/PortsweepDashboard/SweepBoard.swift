import Foundation
public import PortsweepEngine
import PortsweepReport
import Synchronization

/// How far a sweep has come, as the sweep itself counts it (tests, not ports: a port tested for TCP and UDP
/// is two), read by the board a few times a second.
public struct SweepProgress: Sendable {
    public var completed: Int
    public var total: Int
    public var protocols: Int
    /// Seconds until the last port waiting out a deadline is decided (0 when none waits).
    public var deadlineLeft: Double

    public init(completed: Int, total: Int, protocols: Int, deadlineLeft: Double) {
        self.completed = completed
        self.total = total
        self.protocols = protocols
        self.deadlineLeft = deadlineLeft
    }
}

/// What the sweep dashboard shows, fed with every verdict as the sweep decides it (in any order: a port waiting
/// out a deadline holds back nothing) and read by each page's event stream. Memory is bounded by the sweep
/// itself: a verdict per port and protocol and one entry per decided test in the log, never anything per page
/// or per second of uptime. A page's stream keeps a cursor into the log and is sent only what came since,
/// sorted and merged into runs of consecutive ports with the same verdict and reason.
public final class SweepBoard: Sendable {
    public enum Phase: String, Sendable {
        case running, done, interrupted, failed
    }

    private struct State {
        /// Per protocol (the board's order) and port: the outcome's bits + 1, 0 untested; the errno behind it.
        var codes: [[UInt8]]
        var errnos: [[Int32]]
        var holders: [Int: PortHolder] = [:]
        /// Every decided test, in the order decided: protocol index << 16 | port.
        var log: [UInt32] = []
        /// Per protocol index and outcome bits: how many tests (words are made only for a page's update: this
        /// is counted on the sweep's loop threads, for every test).
        var counts: [[Int]]
        var phase = Phase.running
        var summary = ""
        var exitStatus: Int32?
        var startedAt: ContinuousClock.Instant?
        var finishedAt: ContinuousClock.Instant?
    }

    public let title: String
    public let transports: [Transport]
    private let progress: @Sendable () -> SweepProgress
    private let state: Mutex<State>

    public init(title: String, transports: [Transport], progress: @escaping @Sendable () -> SweepProgress) {
        self.title = title
        self.transports = transports
        self.progress = progress
        state = Mutex(State(codes: transports.map { _ in [UInt8](repeating: 0, count: 65536) },
                            errnos: transports.map { _ in [Int32](repeating: 0, count: 65536) },
                            counts: transports.map { _ in [Int](repeating: 0, count: 256) }))
    }

    /// The sweep starts now (the page's elapsed time and rate count from here, as the summary's do).
    public func begin() {
        state.withLock { $0.startedAt = .now }
    }

    /// Verdicts as the sweep decides them (a loop thread: this only stores them).
    public func add(_ batch: [PortResult]) {
        state.withLock { state in
            for result in batch {
                guard let t = transports.firstIndex(of: result.transport) else { continue }
                let p = Int(result.port)
                if state.codes[t][p] == 0 { state.log.append(UInt32(t) << 16 | UInt32(p)) }
                state.codes[t][p] = result.outcome.rawValue &+ 1
                state.errnos[t][p] = result.errno
                if let holder = result.holder { state.holders[t << 16 | p] = holder }
                state.counts[t][Int(result.outcome.rawValue)] += 1
            }
        }
    }

    public func add(_ result: PortResult) { add([result]) }

    /// The sweep has ended: how, its summary line and the exit status it will end with.
    public func finish(_ phase: Phase, summary: String, exitStatus: Int32?) {
        state.withLock { state in
            state.phase = phase
            state.summary = summary
            state.exitStatus = exitStatus
            state.finishedAt = .now
        }
    }

    public var phase: Phase { state.withLock { $0.phase } }

    /// Every result so far, in port order (TCP before UDP), as the downloads list them.
    public var results: [PortResult] {
        state.withLock { state in
            var out: [PortResult] = []
            out.reserveCapacity(state.log.count)
            for p in 1..<65536 {
                for t in transports.indices where state.codes[t][p] != 0 {
                    out.append(result(state, t, p))
                }
            }
            return out
        }
    }

    private func result(_ state: State, _ t: Int, _ p: Int) -> PortResult {
        PortResult(port: UInt16(p), transport: transports[t], outcome: Outcome(rawValue: state.codes[t][p] &- 1),
                   errno: state.errnos[t][p], holder: state.holders[t << 16 | p])
    }

    /// What a page has not seen yet: the tests decided since `cursor`, as runs, with the progress.
    /// Returns the update's JSON and the cursor for the next one.
    public func update(since cursor: Int) -> (json: [UInt8], cursor: Int) {
        let reading = progress()
        let (groups, next, snapshot) = state.withLock { state -> ([PortGroup], Int, Snapshot) in
            let fresh = state.log[min(cursor, state.log.count)...].sorted()
            let end = state.finishedAt ?? .now
            let elapsed = state.startedAt.map { Self.seconds(end - $0) } ?? 0
            return (runs(fresh, state), state.log.count,
                    Snapshot(phase: state.phase, summary: state.summary, exitStatus: state.exitStatus,
                             counts: countsByWord(state.counts), elapsed: elapsed))
        }
        let update = Update(reading, snapshot, groups: groups)
        return ((try? JSONEncoder().encode(update)).map(Array.init) ?? Array("{}".utf8), next)
    }

    private func countsByWord(_ counts: [[Int]]) -> [Transport: [String: Int]] {
        var out: [Transport: [String: Int]] = [:]
        for (t, row) in counts.enumerated() {
            for (bits, n) in row.enumerated() where n > 0 { out[transports[t], default: [:]][Outcome(rawValue: UInt8(bits)).word] = n }
        }
        return out
    }

    /// Sorted log entries as groups of consecutive ports with the same verdict, errno and holder.
    private func runs(_ entries: [UInt32], _ state: State) -> [PortGroup] {
        var groups: [PortGroup] = []
        for entry in entries {
            let t = Int(entry >> 16), p = Int(entry & 0xffff)
            let outcome = Outcome(rawValue: state.codes[t][p] &- 1), errno = state.errnos[t][p]
            let holder = state.holders[t << 16 | p]
            if var last = groups.last, last.transport == transports[t], Int(last.last) + 1 == p,
               last.outcome == outcome, last.errno == errno, last.holder == holder {
                last.last = UInt16(p)
                groups[groups.count - 1] = last
            } else {
                groups.append(PortGroup(transport: transports[t], first: UInt16(p), last: UInt16(p), outcome: outcome,
                                        errno: errno, holder: holder))
            }
        }
        return groups
    }

    fileprivate struct Snapshot {
        var phase: Phase
        var summary: String
        var exitStatus: Int32?
        var counts: [Transport: [String: Int]]
        var elapsed: Double
    }

    /// One event of the page's stream.
    fileprivate struct Update: Encodable {
        var phase: String
        var summary: String
        var exitStatus: Int32?
        /// Ports, not tests (as the progress bar counts them).
        var done: Int
        var total: Int
        var rate: Double
        var eta: Double?
        var elapsed: Double
        var counts: [String: [String: Int]]
        /// `[protocol, first, last, word, reason]`, as the report's data.
        var groups: [[String]]

        init(_ progress: SweepProgress, _ snapshot: Snapshot, groups: [PortGroup]) {
            let protocols = max(1, progress.protocols)
            phase = snapshot.phase.rawValue
            summary = snapshot.summary
            exitStatus = snapshot.exitStatus
            done = progress.completed / protocols
            total = progress.total / protocols
            elapsed = snapshot.elapsed
            rate = elapsed > 0 ? Double(done) / elapsed : 0
            if snapshot.phase == .running {
                eta = rate > 0 ? max(Double(total - done) / rate, progress.deadlineLeft) : nil
            }
            counts = Dictionary(uniqueKeysWithValues: snapshot.counts.map { ($0.key.rawValue, $0.value) })
            self.groups = groups.map { [$0.transport.rawValue, "\($0.first)", "\($0.last)", $0.outcome.word, HTMLReport.reason($0)] }
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
