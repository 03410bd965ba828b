/// A hashed timing wheel of slot numbers: O(1) schedule and cancel, and one pass per coarse tick to collect what
/// is due. One wheel serves a whole shard, driven by one coarse timer, instead of a `uv_timer_t` per port.
struct DeadlineWheel {
    private let granularity: UInt64
    private let mask: Int
    private var heads: [Int32]
    private var next: [Int32]
    private var prev: [Int32]
    private var bucketOf: [Int32]
    private(set) var deadline: [UInt64]
    private var cursor: UInt64

    /// `slots`: how many slot numbers (0..<slots) can be scheduled. `granularity`: milliseconds per bucket.
    init(slots: Int, granularity: UInt64, buckets: Int = 1024, now: UInt64) {
        precondition(buckets > 0 && buckets & (buckets - 1) == 0, "bucket count must be a power of two")
        self.granularity = max(1, granularity)
        mask = buckets - 1
        heads = [Int32](repeating: -1, count: buckets)
        next = [Int32](repeating: -1, count: slots)
        prev = [Int32](repeating: -1, count: slots)
        bucketOf = [Int32](repeating: -1, count: slots)
        deadline = [UInt64](repeating: 0, count: slots)
        cursor = now / self.granularity
    }

    func isScheduled(_ slot: Int32) -> Bool { bucketOf[Int(slot)] >= 0 }

    /// (Re)schedules `slot` to fall due at `time` (ms, the loop's clock).
    mutating func schedule(_ slot: Int32, at time: UInt64) {
        cancel(slot)
        let s = Int(slot)
        deadline[s] = time
        let bucket = Int32(truncatingIfNeeded: Int(max(time / granularity, cursor)) & mask)
        bucketOf[s] = bucket
        let head = heads[Int(bucket)]
        next[s] = head
        prev[s] = -1
        if head >= 0 { prev[Int(head)] = slot }
        heads[Int(bucket)] = slot
    }

    mutating func cancel(_ slot: Int32) {
        let s = Int(slot)
        let bucket = bucketOf[s]
        guard bucket >= 0 else { return }
        let (p, n) = (prev[s], next[s])
        if p >= 0 { next[Int(p)] = n } else { heads[Int(bucket)] = n }
        if n >= 0 { prev[Int(n)] = p }
        bucketOf[s] = -1
    }

    /// Removes every slot due at `now` or earlier and appends it to `due`.
    mutating func collectDue(now: UInt64, into due: inout [Int32]) {
        let nowTick = now / granularity
        // More than one revolution behind: one full pass covers every bucket.
        let first = nowTick - cursor > UInt64(mask) ? nowTick - UInt64(mask) : cursor
        var tick = first
        while tick <= nowTick {
            var slot = heads[Int(tick) & mask]
            while slot >= 0 {
                let following = next[Int(slot)]
                if deadline[Int(slot)] <= now {
                    cancel(slot)
                    due.append(slot)
                }
                slot = following
            }
            tick += 1
        }
        cursor = nowTick
    }
}
