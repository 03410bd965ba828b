@testable import PortsweepEngine
import Synchronization
import Testing
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// A probe without sockets: each port does what the test says, so the scheduler's window, stalls, requeues,
/// retries, retransmits and cancellation are seen alone. Loop thread only.
final class FakeProbe: PortProbe {
    enum Behaviour: Sendable {
        /// Verdict at once.
        case pass
        /// Never answers: only the deadline ends it (FAIL).
        case drop
        /// The first try runs short of descriptors (EMFILE), the next passes.
        case shortageOnce
        /// Every try runs short of descriptors.
        case shortageAlways
        /// The first try is spoiled by the sweep itself, the next passes.
        case spoiledOnce
        /// Held by another socket.
        case used
    }

    let transport = Transport.tcp
    unowned(unsafe) var scheduler: ShardScheduler!
    private let behaviour: @Sendable (UInt16) -> Behaviour
    private var portOf: [Int32: UInt16] = [:]
    var starts: [UInt16: Int] = [:]
    var inFlight = 0
    var maxInFlight = 0
    var abandoned = 0
    var retransmits: [UInt16: Int] = [:]

    init(_ behaviour: @escaping @Sendable (UInt16) -> Behaviour) { self.behaviour = behaviour }

    func start(_ slot: Int32, port: UInt16) {
        starts[port, default: 0] += 1
        portOf[slot] = port
        inFlight += 1
        maxInFlight = max(maxInFlight, inFlight)
        let first = starts[port] == 1
        switch behaviour(port) {
        case .pass: pass(slot)
        case .drop: scheduler.beginStep(slot)
        case .shortageOnce where first, .shortageAlways:
            scheduler.requeue(slot, errno: EMFILE)
            release(slot)
        case .spoiledOnce where first:
            scheduler.retry(slot)
            release(slot)
        case .shortageOnce, .spoiledOnce: pass(slot)
        case .used:
            scheduler.finish(slot, .used, errno: EADDRINUSE)
            release(slot)
        }
    }

    private func pass(_ slot: Int32) {
        scheduler.finish(slot, .pass)
        release(slot)
    }

    private func release(_ slot: Int32) {
        inFlight -= 1
        portOf[slot] = nil
        scheduler.release(slot)
    }

    func expire(_ slot: Int32) {
        scheduler.finish(slot, .fail, errno: ETIMEDOUT)
        release(slot)
    }

    func abandon(_ slot: Int32) {
        abandoned += 1
        release(slot)
    }

    func retransmit(_ slot: Int32) {
        if let port = portOf[slot] { retransmits[port, default: 0] += 1 }
    }
}

/// What a shard run with a fake probe did. Handed over once, after the shard's loop is done with it.
struct ShardRun: @unchecked Sendable {
    var results: [PortResult]
    var end: ShardEnd
    var probe: FakeProbe
    var elapsed: Duration
    var handlesLeftOpen = -1

    /// Each port's outcome; a port reported twice traps the test.
    var outcomes: [UInt16: Outcome] {
        Dictionary(results.map { ($0.port, $0.outcome) }, uniquingKeysWith: { first, _ in
            Issue.record("a port reported twice")
            return first
        })
    }
}

final class Locked<T>: @unchecked Sendable {
    private let mutex = Mutex<Void>(())
    private var value: T
    init(_ value: T) { self.value = value }
    func withLock<R>(_ body: (inout T) -> R) -> R { mutex.withLock { _ in body(&value) } }
}

final class Box<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}

@Suite struct SchedulerTests {
    /// Runs one shard of `ports` with a fake probe on a loop of its own, cancelled `cancelAfter` after its start
    /// if given; then stops the loop and records how many handles were left open.
    static func run(_ ports: [UInt16], _ settings: ShardSettings, cancelAfter: Duration? = nil,
                    _ behaviour: @escaping @Sendable (UInt16) -> FakeProbe.Behaviour) async throws -> ShardRun {
        let loop = try EventLoop(name: "scheduler-test")
        let started = ContinuousClock.now
        let handle = Locked<ShardHandle?>(nil)
        var run = await withCheckedContinuation { (finished: CheckedContinuation<ShardRun, Never>) in
            loop.execute {
                let probe = FakeProbe(behaviour)
                let results = Box<[PortResult]>([])
                let scheduler = ShardScheduler(
                    loop: loop, ports: ports, settings: settings, deliver: { results.value += $0 },
                    done: { end in
                        finished.resume(returning: ShardRun(results: results.value, end: end, probe: probe,
                                                            elapsed: ContinuousClock.now - started))
                    })
                probe.scheduler = scheduler
                scheduler.probe = probe
                handle.withLock { $0 = ShardHandle(loop: loop, scheduler: scheduler) }
                scheduler.start()
            }
            if let cancelAfter {
                Task {
                    try? await Task.sleep(for: cancelAfter)
                    handle.withLock { $0 }?.cancel()
                }
            }
        }
        loop.shutdown()
        run.handlesLeftOpen = loop.handlesLeftOpen
        return run
    }

    static let ports = [UInt16](1000..<1100)

    @Test func everyPortGetsOneResultInTheOrderTheyFinish() async throws {
        let run = try await Self.run(Self.ports, ShardSettings(window: 16, capacity: 16, timeout: .seconds(1))) { _ in .pass }
        #expect(run.results.count == 100 && run.outcomes.values.allSatisfy { $0 == .pass })
        #expect(run.results.map(\.port) == Self.ports, "ports start (and here finish) in the order given")
        #expect(run.end.failure == nil && !run.end.cancelled && run.end.retryCandidates.isEmpty)
        #expect(run.handlesLeftOpen == 0)
    }

    @Test func theWindowBoundsPortsInFlight() async throws {
        // Capacity = window: ports a firewall drops keep their slot until their deadline.
        let settings = ShardSettings(window: 8, capacity: 8, timeout: .milliseconds(100))
        let run = try await Self.run(Array(Self.ports.prefix(40)), settings) { _ in .drop }
        #expect(run.probe.maxInFlight == 8)
        #expect(run.results.count == 40 && run.outcomes.values.allSatisfy { $0 == .fail })
        #expect(run.results.allSatisfy { $0.errno == ETIMEDOUT })
        // Five rounds of one timeout each, at the least.
        #expect(run.elapsed >= .milliseconds(500), "\(run.elapsed)")
        #expect(run.handlesLeftOpen == 0)
    }

    @Test func stalledPortsLeaveTheWindowSoItKeepsMoving() async throws {
        // 40 dropped ports, a window of 4: in turns of the window they would take 10 timeouts (3 s); a port
        // that stalls (20 ms here) makes room for the next while it waits out its deadline aside.
        let settings = ShardSettings(window: 4, capacity: 64, timeout: .milliseconds(300))
        #expect(settings.stallAfter == .milliseconds(20))
        let run = try await Self.run(Array(Self.ports.prefix(40)), settings) { _ in .drop }
        #expect(run.probe.maxInFlight > 4, "stalled ports must leave the window")
        #expect(run.results.count == 40 && run.outcomes.values.allSatisfy { $0 == .fail })
        #expect(run.elapsed < .milliseconds(2_000), "\(run.elapsed): the window did not move past stalled ports")
        #expect(run.handlesLeftOpen == 0)
    }

    @Test func aShortageRequeuesThePortAndShrinksTheShardNeverAResult() async throws {
        let short = Set<UInt16>(1010..<1020)
        let run = try await Self.run(Self.ports, ShardSettings(window: 32, capacity: 32, timeout: .seconds(1))) { port in
            short.contains(port) ? .shortageOnce : .pass
        }
        #expect(run.results.count == 100 && run.outcomes.values.allSatisfy { $0 == .pass })
        for port in short { #expect(run.probe.starts[port] == 2, "port \(port) tried \(run.probe.starts[port] ?? 0) times") }
        #expect(run.end.failure == nil)
    }

    @Test func starvedOfDescriptorsWithNothingElseInFlightIsALocalFailure() async throws {
        let run = try await Self.run(Array(Self.ports.prefix(5)), ShardSettings(window: 4, capacity: 4, timeout: .milliseconds(200))) { _ in
            .shortageAlways
        }
        #expect(run.end.failure == .descriptorsExhausted(errno: EMFILE))
        #expect(run.results.isEmpty, "a local shortage is never a port's result")
        // It waits (backing off) about max(timeout, 2 s) for descriptors before it gives up.
        #expect(run.elapsed >= .milliseconds(1_900) && run.elapsed < .seconds(20), "\(run.elapsed)")
        #expect(run.handlesLeftOpen == 0)
    }

    @Test func aTestTheSweepSpoiledIsRunAgain() async throws {
        let run = try await Self.run(Self.ports, ShardSettings(window: 16, capacity: 16, timeout: .seconds(1))) { port in
            port == 1050 ? .spoiledOnce : .pass
        }
        #expect(run.probe.starts[1050] == 2)
        #expect(run.outcomes[1050] == .pass && run.results.count == 100)
    }

    @Test func usedIsSetAsideInAMainPassAndReportedInTheRetryPass() async throws {
        let used: @Sendable (UInt16) -> FakeProbe.Behaviour = { $0 == 1001 || $0 == 1002 ? .used : .pass }
        let main = try await Self.run(Array(Self.ports.prefix(10)), ShardSettings(window: 4, capacity: 4, timeout: .seconds(1)), used)
        #expect(main.end.retryCandidates.sorted() == [1001, 1002])
        #expect(main.outcomes[1001] == nil && main.results.count == 8)
        let retry = try await Self.run([1001, 1002], ShardSettings(window: 4, capacity: 4, timeout: .seconds(1), isRetryPass: true), used)
        #expect(retry.outcomes == [1001: .used, 1002: .used])
    }

    @Test func datagramStepsAreResentAtTheirInterval() async throws {
        let settings = ShardSettings(window: 4, capacity: 4, timeout: .milliseconds(400), retransmitInterval: .milliseconds(50))
        let run = try await Self.run([2000], settings) { _ in .drop }
        // 400 ms / 50 ms: about 7 resends before the deadline; the wheel's granularity may merge a few.
        let resent = run.probe.retransmits[2000] ?? 0
        #expect((3...8).contains(resent), "\(resent) retransmits")
        #expect(run.outcomes[2000] == .fail)
    }

    @Test func cancellingAbandonsWhatIsInFlightAndSaysCancelled() async throws {
        let settings = ShardSettings(window: 8, capacity: 8, timeout: .seconds(30))
        let run = try await Self.run(Self.ports, settings, cancelAfter: .milliseconds(100)) { _ in .drop }
        #expect(run.end.cancelled && run.end.failure == nil)
        #expect(run.probe.abandoned == 8 && run.probe.inFlight == 0)
        #expect(run.results.isEmpty, "an abandoned port has no result")
        #expect(run.elapsed < .seconds(10), "\(run.elapsed)")
        #expect(run.handlesLeftOpen == 0)
    }
}
