import PortsweepEngine
import Synchronization

/// Collects results from every shard (each on its own loop thread) and releases them in port order: a port is
/// handed on once every port before it has its verdict.
final class ResultBoard: Sendable {
    private struct State {
        var results: [PortResult?]
        var cursor = 0
        var counts: [Outcome: Int] = [:]
    }

    private let position: [Int32]
    private let transports: [Transport]
    private let state: Mutex<State>
    private let completedCount = Atomic<Int>(0)
    private let emit: @Sendable ([PortResult]) -> Void
    private let observe: @Sendable ([PortResult]) -> Void
    private let metrics = SweepMetrics()

    /// `ports` ascending, each tested for every one of `transports` (TCP first); `emit` receives runs of results in port order (called under the board's lock, from a loop
    /// thread: it must not call back into the board).
    /// `observe` sees each batch as it is posted, before the order is restored.
    init(ports: [UInt16], transports: [Transport], observe: @escaping @Sendable ([PortResult]) -> Void = { _ in },
         emit: @escaping @Sendable ([PortResult]) -> Void) {
        self.observe = observe
        var position = [Int32](repeating: -1, count: 65536)
        for (i, port) in ports.enumerated() { position[Int(port)] = Int32(i * transports.count) }
        self.position = position
        self.transports = transports
        state = Mutex(State(results: [PortResult?](repeating: nil, count: ports.count * transports.count)))
        self.emit = emit
    }

    /// Ports with a verdict so far, in any order.
    var completed: Int { completedCount.load(ordering: .relaxed) }

    var counts: [Outcome: Int] { state.withLock { $0.counts } }

    /// After an interruption: every result not handed out yet (behind a port that never got one), in port order.
    func postRemaining() {
        state.withLock { state in
            let rest = state.results[state.cursor...].compactMap { $0 }
            state.cursor = state.results.count
            if !rest.isEmpty { emit(rest) }
        }
    }

    /// The tests without a verdict yet: (port, protocol).
    func missing() -> [(UInt16, Transport)] {
        state.withLock { state in
            var out: [(UInt16, Transport)] = []
            for (port, first) in position.enumerated() where first >= 0 {
                for (offset, transport) in transports.enumerated() where state.results[Int(first) + offset] == nil {
                    out.append((UInt16(port), transport))
                }
            }
            return out
        }
    }

    func post(_ batch: [PortResult]) {
        // Emitting under the lock keeps runs in port order when two loops post at once; `emit` only yields to an
        // AsyncStream, which never calls back into the board.
        state.withLock { state in
            for result in batch {
                let offset = result.transport == transports[0] ? 0 : 1
                state.results[Int(position[Int(result.port)]) + offset] = result
                state.counts[result.outcome, default: 0] += 1
            }
            let start = state.cursor
            while state.cursor < state.results.count, state.results[state.cursor] != nil { state.cursor += 1 }
            if state.cursor > start { emit(state.results[start..<state.cursor].map { $0! }) }
        }
        completedCount.add(batch.count, ordering: .relaxed)
        metrics.record(batch)
        observe(batch)
    }
}
