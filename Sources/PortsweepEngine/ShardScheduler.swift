import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import UVLoop

/// When any shard of this process last ran short of descriptors (uv_hrtime in ms; 0: never). Descriptors are a
/// process-wide resource: one loop's shortage spoils another loop's accepts.
private let lastShortage = Atomic<UInt64>(0)

/// The work of one kind of per-port test, driven by a `ShardScheduler`. All calls happen on the shard's loop.
/// A probe reports each port exactly once through `finish`/`requeue` and hands the slot back with `release` once
/// every handle of the slot is closed (libuv owns a handle's memory until its close callback).
protocol PortProbe: AnyObject {
    /// The protocol this probe tests.
    var transport: Transport { get }
    /// Begins the test of `port` in `slot`.
    func start(_ slot: Int32, port: UInt16)
    /// The current step of `slot` missed its deadline.
    func expire(_ slot: Int32)
    /// The sweep was cancelled: close the slot without a result.
    func abandon(_ slot: Int32)
    /// A retransmit interval of `slot`'s current step has passed (only with `ShardSettings.retransmitInterval`).
    func retransmit(_ slot: Int32)
    /// The shard is done: close shard-wide handles, then call `closed` (on the loop).
    func close(then closed: @escaping () -> Void)
}

extension PortProbe {
    func retransmit(_ slot: Int32) {}
    func close(then closed: @escaping () -> Void) { closed() }
}

/// Why a shard stopped before testing every port; a problem of this machine, never a port's result.
public enum LocalFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// Not a single port could get its descriptors (EMFILE/ENFILE with nothing else in flight).
    case descriptorsExhausted(errno: Int32)
    /// The shared UDP client socket could not be opened.
    case clientSocket(errno: Int32)

    /// Out of descriptors (the fix is RLIMIT_NOFILE, not the network).
    public var isDescriptorShortage: Bool {
        switch self {
        case .descriptorsExhausted: return true
        case .clientSocket(let errno): return errno == EMFILE || errno == ENFILE
        }
    }

    public var description: String {
        switch self {
        case .descriptorsExhausted(let errno):
            return "out of file descriptors (\(UVError.name(ofErrno: errno))) even with a single port in flight"
        case .clientSocket(let errno):
            return "cannot open the UDP client socket: \(UVError.name(ofErrno: errno))"
        }
    }
}

/// How a shard ended.
public struct ShardEnd: Sendable {
    /// Ports whose listener met EADDRINUSE in a main pass: maybe our own client sockets, retried at the end.
    public var retryCandidates: [UInt16]
    public var failure: LocalFailure?
    public var cancelled: Bool
}

/// Tuning of one shard.
public struct ShardSettings: Sendable {
    /// Ports actively worked on at once (ports stalled past `stallAfter` stop counting).
    public var window: Int
    /// Slots, bounded by descriptors: active plus stalled ports.
    public var capacity: Int
    /// The deadline of each step of a port's test.
    public var timeout: Duration
    /// A port whose step has waited this long (a dropping firewall) leaves the window and waits out its timeout
    /// aside, so the window keeps moving.
    public var stallAfter: Duration
    /// A final pass: EADDRINUSE is reported as USED instead of being set aside for a retry.
    public var isRetryPass: Bool
    /// USED in a main pass is set aside for the retry pass (the sweep's own client sockets may hold the port).
    /// An outbound sweep's USED is the far end's answer: final.
    public var setsAsideUsed = true
    /// Datagram probes resend this often within a step (nil: never).
    public var retransmitInterval: Duration?
    /// Ports started per loop iteration at most: uv_now() is cached per iteration, so a long start-up batch
    /// would stamp ports with a stale time and let replies pile up unread.
    public var startBatch = 128

    public init(window: Int, capacity: Int, timeout: Duration, isRetryPass: Bool = false,
                retransmitInterval: Duration? = nil) {
        self.retransmitInterval = retransmitInterval
        self.window = max(1, window)
        self.capacity = max(self.window, capacity)
        self.timeout = timeout
        let ms = timeout.milliseconds
        // Short: a stalled port only leaves the window (it still waits its whole timeout), and a window full of
        // ports a firewall drops must turn over fast. On loopback a TCP step takes well under 20 ms. Datagram
        // ports stall no sooner than their first retransmit: a UDP step slowed by queueing looks like a drop,
        // and letting more ports in then only feeds the queue (and the retransmits) until replies are lost.
        var stall = min(250, max(20, ms / 20))
        if let retransmitInterval { stall = max(stall, retransmitInterval.milliseconds) }
        self.stallAfter = .milliseconds(Int64(min(stall, ms)))
        self.isRetryPass = isRetryPass
    }
}

/// One loop's share of a sweep: a window of ports in flight, batched starts, one coarse timer and a deadline wheel
/// swept after each poll, results handed over once per loop iteration.
public final class ShardScheduler {
    let loop: EventLoop
    private var settings: ShardSettings
    private let ports: [UInt16]
    private var cursor = 0
    private var requeued: [UInt16] = []
    private var retryCandidates: [UInt16] = []
    private var pending: [PortResult] = []
    private var free: [Int32]
    private var slotPort: [UInt16]
    private var parked: [Bool]
    /// The slot's port has no verdict yet (its deadline is live).
    private var live: [Bool]
    private var stepStart: [UInt64]
    private var startedAt: [UInt64]
    /// After a shortage with (almost) nothing of ours in flight: wait for other shards to free descriptors.
    private var backoffUntil: UInt64 = 0
    private var starvedSince: UInt64 = 0
    private let plannedWindow: Int
    private let plannedCapacity: Int
    private var wheel: DeadlineWheel
    private var due: [Int32] = []
    private var busy = 0
    private var active = 0
    private var filling = false
    private var stopping = false
    private var failure: LocalFailure?
    private var finished = false
    private let timeoutMs: UInt64
    private let stallMs: UInt64
    private let retransmitMs: UInt64?
    var probe: (any PortProbe)!
    var progress: ShardProgress?
    /// `--rate`, shared with every other shard of the sweep.
    var rate: RateLimit?
    /// The last fill stopped at the rate limit: the coarse tick fills again.
    private var throttled = false
    private var publishedAt: UInt64 = 0

    /// After each poll: deadlines swept, results handed over.
    private var check: IterationHook?
    /// While a start-up batch is cut short: the rest starts on the next iteration.
    private var idle: IdleHook?
    /// Only wakes the loop, so that `check` runs at least this often.
    private var tick: LoopTimer?
    private var handlesOpen = 0
    /// Holds the scheduler until its last own handle is closed.
    private var keepAlive: Unmanaged<ShardScheduler>?

    private let deliver: ([PortResult]) -> Void
    private let done: (ShardEnd) -> Void

    /// Loop thread only. `deliver` receives results once per loop iteration; `done` is called once, last.
    init(loop: EventLoop, ports: [UInt16], settings: ShardSettings,
         deliver: @escaping ([PortResult]) -> Void, done: @escaping (ShardEnd) -> Void) {
        loop.preconditionInEventLoop()
        self.loop = loop
        self.ports = ports
        self.settings = settings
        self.deliver = deliver
        self.done = done
        let slots = settings.capacity
        plannedWindow = settings.window
        plannedCapacity = settings.capacity
        free = (0..<Int32(slots)).reversed()
        slotPort = [UInt16](repeating: 0, count: slots)
        parked = [Bool](repeating: false, count: slots)
        live = [Bool](repeating: false, count: slots)
        stepStart = [UInt64](repeating: 0, count: slots)
        startedAt = [UInt64](repeating: 0, count: slots)
        timeoutMs = max(1, settings.timeout.milliseconds)
        stallMs = min(timeoutMs, max(1, settings.stallAfter.milliseconds))
        retransmitMs = settings.retransmitInterval.map { max(1, $0.milliseconds) }
        let granularity = max(1, min(50, min(stallMs, retransmitMs ?? stallMs) / 5))
        wheel = DeadlineWheel(slots: slots, granularity: granularity, buckets: 4096, now: loop.now)
    }

    var now: UInt64 { loop.now }

    /// A clock shared by all loops, for the process-wide shortage mark.
    private static var processMilliseconds: UInt64 { MonotonicClock.milliseconds }

    /// Starts the shard: opens its handles and the first batch of ports.
    func start() {
        keepAlive = Unmanaged.passRetained(self)
        // The hooks' actions do not hold the scheduler: `keepAlive` does, until they are closed.
        check = IterationHook(on: loop) { [unowned(unsafe) self] in afterPoll() }
        idle = IdleHook(on: loop) { [unowned(unsafe) self] in fill() }
        tick = LoopTimer(on: loop) {}
        handlesOpen = 3
        // The coarse timer only wakes the loop; deadlines are swept after the poll, when replies already in the
        // kernel have been read (sweeping in the timer callback, before I/O, gives false timeouts).
        let period = max(1, min(50, min(stallMs, retransmitMs ?? stallMs) / 5))
        tick?.start(after: .milliseconds(Int64(period)), repeat: .milliseconds(Int64(period)))
        loop.updateTime()
        fill()
    }

    /// Stops starting ports and abandons those in flight; `done` reports `cancelled`.
    func cancel() {
        guard !stopping else { return }
        stopping = true
        cursor = ports.count
        requeued.removeAll()
        for slot in 0..<Int32(settings.capacity) where slotPort[Int(slot)] != 0 {
            wheel.cancel(slot)
            live[Int(slot)] = false
            probe.abandon(slot)
        }
        fill()
    }

    // MARK: calls from the probe

    /// The slot's port enters a new step: its deadline restarts.
    func beginStep(_ slot: Int32) {
        let now = self.now
        stepStart[Int(slot)] = now
        wheel.schedule(slot, at: nextWake(slot, now: now))
    }

    /// The step's deadline, or earlier: when it stalls (leaves the window) or is due a retransmit.
    private func nextWake(_ slot: Int32, now: UInt64) -> UInt64 {
        let s = Int(slot)
        let start = stepStart[s]
        var wake = start + timeoutMs
        if !parked[s] { wake = min(wake, start + stallMs) }
        if let retransmitMs { wake = min(wake, start + ((now - start) / retransmitMs + 1) * retransmitMs) }
        return max(wake, now + 1)
    }

    /// The port of `slot` has its verdict. (Its handles may still be closing.)
    func finish(_ slot: Int32, _ outcome: Outcome, errno: Int32 = 0) {
        wheel.cancel(slot)
        live[Int(slot)] = false
        let port = slotPort[Int(slot)]
        if outcome == .used && !settings.isRetryPass && settings.setsAsideUsed {
            retryCandidates.append(port)
        } else if !stopping {
            pending.append(PortResult(port: port, transport: probe.transport, outcome: outcome, errno: errno))
        }
    }

    /// The slot ran out of descriptors (or another local resource): its port goes back to the queue and the
    /// shard holds fewer ports from now on. Never a port's result.
    func requeue(_ slot: Int32, errno: Int32) {
        wheel.cancel(slot)
        live[Int(slot)] = false
        lastShortage.store(max(1, ShardScheduler.processMilliseconds), ordering: .relaxed)
        guard !stopping else { return }
        if busy <= 1 {
            // Nothing else of this shard to close: other shards (or other code) hold the descriptors. Wait a
            // little for them; give up only when starved for longer than a timeout.
            let now = self.now
            if starvedSince == 0 { starvedSince = now }
            if now - starvedSince > max(timeoutMs, 2000) {
                failure = .descriptorsExhausted(errno: errno)
                cancel()
                return
            }
            backoffUntil = now + 20
        }
        requeued.append(slotPort[Int(slot)])
        settings.capacity = max(1, busy - 1)
        settings.window = min(settings.window, settings.capacity)
    }

    /// Whether the shard ran short of descriptors while this slot's port was being tested. libuv answers EMFILE
    /// in accept by accepting and closing pending connections (so that the listener is not woken forever): a
    /// client then sees a reset that says nothing about the path.
    func overlapsShortage(_ slot: Int32) -> Bool {
        let mark = lastShortage.load(ordering: .relaxed)
        return mark != 0 && mark >= startedAt[Int(slot)]
    }

    /// The slot's test was spoiled by the sweep itself (not by the path under test): its port goes back to the
    /// queue for another try.
    func retry(_ slot: Int32) {
        wheel.cancel(slot)
        live[Int(slot)] = false
        guard !stopping else { return }
        requeued.append(slotPort[Int(slot)])
    }

    /// Every handle of the slot is closed: the slot is free again.
    func release(_ slot: Int32) {
        let s = Int(slot)
        // Regrow after a shortage, one slot per finished port, once no shortage was seen for half a second.
        if settings.capacity < plannedCapacity,
           ShardScheduler.processMilliseconds > lastShortage.load(ordering: .relaxed) + 500 {
            settings.capacity += 1
            settings.window = min(plannedWindow, max(settings.window, settings.capacity))
        }
        slotPort[s] = 0
        if !parked[s] { active -= 1 }
        parked[s] = false
        busy -= 1
        free.append(slot)
        if !filling { fill() }
    }

    // MARK: the loop

    private func nextPort() -> UInt16? {
        if let port = requeued.popLast() { return port }
        guard cursor < ports.count else { return nil }
        defer { cursor += 1 }
        return ports[cursor]
    }

    private var hasMore: Bool { !requeued.isEmpty || cursor < ports.count }

    private func fill() {
        guard !finished else { return }
        if backoffUntil != 0 {
            guard now >= backoffUntil else { return }  // the coarse tick calls again
            backoffUntil = 0
        }
        filling = true
        throttled = false
        var started = 0
        while busy < settings.capacity && active < settings.window && hasMore {
            if started == settings.startBatch {
                idle?.start()
                filling = false
                return
            }
            if let rate, !rate.take() {
                throttled = true
                break
            }
            guard let slot = free.popLast(), let port = nextPort() else { break }
            slotPort[Int(slot)] = port
            live[Int(slot)] = true
            startedAt[Int(slot)] = ShardScheduler.processMilliseconds
            busy += 1
            active += 1
            started += 1
            probe.start(slot, port: port)
            if live[Int(slot)] { starvedSince = 0 }
        }
        idle?.stop()
        filling = false
        if busy == 0 && !hasMore { end() }
    }

    private func afterPoll() {
        let now = self.now
        wheel.collectDue(now: now, into: &due)
        for slot in due {
            let s = Int(slot)
            let age = now - stepStart[s]
            if age >= timeoutMs {
                probe.expire(slot)
                continue
            }
            if !parked[s] && age >= stallMs {
                parked[s] = true
                active -= 1
            }
            if retransmitMs != nil { probe.retransmit(slot) }
            if live[s] && !wheel.isScheduled(slot) { wheel.schedule(slot, at: nextWake(slot, now: now)) }
        }
        if !due.isEmpty || backoffUntil != 0 || throttled {
            due.removeAll(keepingCapacity: true)
            fill()
        }
        flush()
        if now &- publishedAt >= 100 { publishDeadline(now: now) }
    }

    /// The latest deadline of a port set aside to wait out its timeout (a dropping firewall): the sweep cannot
    /// end before it, however fast the rest goes. Every 100 ms, for the progress bar's ETA.
    private func publishDeadline(now: UInt64) {
        publishedAt = now
        guard let progress else { return }
        var latest: UInt64 = 0
        for slot in 0..<settings.capacity where live[slot] && parked[slot] {
            latest = max(latest, stepStart[slot] + timeoutMs)
        }
        progress.publish(latest > now ? ShardProgress.now + (latest - now) : 0)
    }

    private func flush() {
        guard !pending.isEmpty else { return }
        deliver(pending)
        pending.removeAll(keepingCapacity: true)
    }

    private func end() {
        guard !finished else { return }
        finished = true
        progress?.publish(0)
        flush()
        probe.close { [self] in closeOwnHandles() }
    }

    private func closeOwnHandles() {
        let closed = { [unowned(unsafe) self] in
            handlesOpen -= 1
            guard handlesOpen == 0 else { return }
            done(ShardEnd(retryCandidates: retryCandidates, failure: failure, cancelled: stopping && failure == nil))
            keepAlive?.release()
        }
        check?.close(then: closed)
        idle?.close(then: closed)
        tick?.close(then: closed)
    }
}
