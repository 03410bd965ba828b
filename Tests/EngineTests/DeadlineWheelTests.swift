@testable import PortsweepEngine
import Testing

@Suite struct DeadlineWheelTests {
    /// 16 buckets of 10 ms: one revolution is 160 ms.
    static func wheel(now: UInt64 = 1_000) -> DeadlineWheel { DeadlineWheel(slots: 8, granularity: 10, buckets: 16, now: now) }

    static func due(_ wheel: inout DeadlineWheel, at now: UInt64) -> Set<Int32> {
        var due: [Int32] = []
        wheel.collectDue(now: now, into: &due)
        #expect(due.count == Set(due).count, "a slot collected twice")
        return Set(due)
    }

    @Test func collectsWhatIsDueAndNothingElse() {
        var wheel = Self.wheel()
        wheel.schedule(0, at: 1_005)
        wheel.schedule(1, at: 1_025)
        wheel.schedule(2, at: 1_100)
        #expect(Self.due(&wheel, at: 1_004).isEmpty)
        #expect(Self.due(&wheel, at: 1_030) == [0, 1])
        #expect(!wheel.isScheduled(0) && wheel.isScheduled(2))
        #expect(Self.due(&wheel, at: 1_099).isEmpty, "due inside a bucket's span, not at its start")
        #expect(Self.due(&wheel, at: 1_100) == [2])
        #expect(Self.due(&wheel, at: 2_000).isEmpty)
    }

    @Test func cancelAndRescheduleMoveASlot() {
        var wheel = Self.wheel()
        wheel.schedule(3, at: 1_010)
        wheel.schedule(4, at: 1_010)
        wheel.cancel(3)
        wheel.cancel(3)  // twice is harmless
        wheel.schedule(4, at: 1_050)  // a reschedule replaces the old deadline
        #expect(Self.due(&wheel, at: 1_020).isEmpty)
        #expect(Self.due(&wheel, at: 1_050) == [4])
    }

    @Test func aDeadlineMoreThanARevolutionAheadWaitsItsTurn() {
        var wheel = Self.wheel()
        wheel.schedule(5, at: 1_000 + 1_000)  // six revolutions ahead: shares a bucket with nearer times
        wheel.schedule(6, at: 1_040)
        for now in stride(from: UInt64(1_010), to: 2_000, by: 10) {
            let due = Self.due(&wheel, at: now)
            #expect(!due.contains(5), "slot 5 collected at \(now), due at 2000")
            if now == 1_040 { #expect(due == [6]) }
        }
        #expect(Self.due(&wheel, at: 2_000) == [5])
    }

    @Test func aLoopThatFellFarBehindCollectsEverythingDueInOnePass() {
        var wheel = Self.wheel()
        for slot in 0..<Int32(8) { wheel.schedule(slot, at: 1_000 + UInt64(slot) * 37) }
        // Ten seconds without a sweep (a stalled loop): more than one revolution behind.
        #expect(Self.due(&wheel, at: 11_000) == Set(0..<8))
    }
}
