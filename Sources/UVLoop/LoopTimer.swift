import CLibUV

/// What a kit handle's `data` points to: the action its callback runs, and the Swift object that owns the
/// handle, kept alive from `init` until libuv's close callback (the handle's memory is freed there too).
final class HandleBox {
    var owner: AnyObject?
    let action: () -> Void
    var onClosed: (() -> Void)?

    init(owner: AnyObject, action: @escaping () -> Void) {
        self.owner = owner
        self.action = action
    }

    /// Stores a retained box in `handle.data`.
    static func attach(_ handle: UnsafeMutablePointer<uv_handle_t>, owner: AnyObject, action: @escaping () -> Void) {
        handle.pointee.data = Unmanaged.passRetained(HandleBox(owner: owner, action: action)).toOpaque()
    }

    /// Runs the action of the handle's box (from a libuv callback).
    @inline(__always)
    static func run(_ handle: UnsafeMutableRawPointer?) {
        let handle = handle!.assumingMemoryBound(to: uv_handle_t.self)
        Unmanaged<HandleBox>.fromOpaque(handle.pointee.data).takeUnretainedValue().action()
    }

    /// `uv_close`; then the box and its owner are released, the handle freed, and `closed` run.
    static func close(_ handle: UnsafeMutablePointer<uv_handle_t>, then closed: (() -> Void)?) {
        let box = Unmanaged<HandleBox>.fromOpaque(handle.pointee.data)
        if uv_is_closing(handle) != 0 {
            // The loop's shutdown closed it as left open (its memory stays libuv's, then is abandoned): the
            // owner is let go and hears `closed` now, so a chain of closes under way still reaches its end.
            box.takeUnretainedValue().owner = nil
            box.release()
            return closed?() ?? ()
        }
        box.takeUnretainedValue().onClosed = closed
        uv_close(handle) { handle in
            let box = Unmanaged<HandleBox>.fromOpaque(handle!.pointee.data)
            let closed = box.takeUnretainedValue().onClosed
            box.takeUnretainedValue().owner = nil
            box.release()
            UnsafeMutableRawPointer(handle!).deallocate()
            closed?()
        }
    }
}

/// A timer of the callback kit: runs `action` on its loop after a delay, and again every `repeat` if given.
/// Loop thread only; closed only by `close()`.
public final class LoopTimer {
    public let loop: EventLoop
    private let timer = uvAllocate(uv_timer_t.self)
    private var isClosing = false

    public init(on loop: EventLoop, _ action: @escaping () -> Void) {
        loop.preconditionInEventLoop()
        self.loop = loop
        uv_timer_init(loop.uv, timer)
        HandleBox.attach(uvHandle(timer), owner: self, action: action)
    }

    public func start(after delay: Duration, repeat interval: Duration? = nil) {
        guard !isClosing else { return }
        uv_timer_start(timer, { HandleBox.run($0) }, delay.milliseconds, interval.map { max(1, $0.milliseconds) } ?? 0)
    }

    public func stop() {
        if !isClosing { uv_timer_stop(timer) }
    }

    /// The timer does not keep the loop running by itself.
    public func unref() { uv_unref(uvHandle(timer)) }

    /// Closes the timer; `closed` runs (on the loop) once libuv is done with it.
    public func close(then closed: (() -> Void)? = nil) {
        guard !isClosing else { return }
        isClosing = true
        HandleBox.close(uvHandle(timer), then: closed)
    }
}

/// Runs `action` once per loop iteration, after the poll for I/O (a `uv_check_t`): where work gathered by
/// callbacks (events, results) is handed on in one batch. Loop thread only; closed only by `close()`.
public final class IterationHook {
    private let check = uvAllocate(uv_check_t.self)
    private var isClosing = false

    public init(on loop: EventLoop, _ action: @escaping () -> Void) {
        loop.preconditionInEventLoop()
        uv_check_init(loop.uv, check)
        HandleBox.attach(uvHandle(check), owner: self, action: action)
        uv_check_start(check) { HandleBox.run($0) }
        // A check handle never keeps the loop running by itself.
        uv_unref(uvHandle(check))
    }

    /// Closes the hook; `closed` runs (on the loop) once libuv is done with it.
    public func close(then closed: (() -> Void)? = nil) {
        guard !isClosing else { return }
        isClosing = true
        HandleBox.close(uvHandle(check), then: closed)
    }
}

/// Runs `action` on every loop iteration while started, without blocking in the poll (a `uv_idle_t`): for
/// work split over iterations, such as starting ports in batches. Loop thread only; closed only by `close()`.
public final class IdleHook {
    private let idle = uvAllocate(uv_idle_t.self)
    private var isClosing = false

    public init(on loop: EventLoop, _ action: @escaping () -> Void) {
        loop.preconditionInEventLoop()
        uv_idle_init(loop.uv, idle)
        HandleBox.attach(uvHandle(idle), owner: self, action: action)
    }

    public func start() {
        if !isClosing { uv_idle_start(idle) { HandleBox.run($0) } }
    }

    public func stop() {
        if !isClosing { uv_idle_stop(idle) }
    }

    public func close(then closed: (() -> Void)? = nil) {
        guard !isClosing else { return }
        isClosing = true
        HandleBox.close(uvHandle(idle), then: closed)
    }
}

/// A value that belongs to one loop, carried across tasks: reading it anywhere but on its loop traps. For the
/// non-Sendable state of the callback kit that a task on the loop must reach (swift-nio's NIOLoopBound).
public struct LoopBox<Value>: @unchecked Sendable {
    public let loop: EventLoop
    private let stored: Value

    public init(_ value: Value, loop: EventLoop) {
        self.loop = loop
        stored = value
    }

    public var value: Value {
        loop.preconditionInEventLoop()
        return stored
    }
}

extension EventLoop {
    /// The addresses of this host's interfaces (IPv4 and IPv6, up or not), from `uv_interface_addresses`.
    public static func interfaceAddresses() -> [IPAddress] {
        var list: UnsafeMutablePointer<uv_interface_address_t>?
        var count: Int32 = 0
        guard uv_interface_addresses(&list, &count) == 0, let list else { return [] }
        defer { uv_free_interface_addresses(list, count) }
        var out: [IPAddress] = []
        for i in 0..<Int(count) {
            var address = list[i].address
            let ip = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress($0)?.ip }
            }
            if let ip { out.append(ip) }
        }
        return out
    }
}

/// The process's monotonic clock (`uv_hrtime`), the same on every loop: for marks that loops compare.
public enum MonotonicClock {
    public static var milliseconds: UInt64 { uv_hrtime() / 1_000_000 }
    public static var nanoseconds: UInt64 { uv_hrtime() }
}

/// Wall-clock time, for stamping events with when they happened (not when they were printed).
public enum WallClock {
    /// Seconds since 1970-01-01 UTC.
    public static var now: Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
