import CLibUV

/// A timer of the callback kit: runs `action` on its loop after a delay, and again every `repeat` if given.
/// Loop thread only; closed only by `close()`.
public final class LoopTimer {
    public let loop: EventLoop
    private let timer = uvAllocate(uv_timer_t.self)
    private let action: () -> Void
    private var isClosing = false
    private var onClosed: (() -> Void)?

    public init(on loop: EventLoop, _ action: @escaping () -> Void) {
        loop.preconditionInEventLoop()
        self.loop = loop
        self.action = action
        uv_timer_init(loop.uv, timer)
        timer.pointee.data = Unmanaged.passRetained(self).toOpaque()  // released in the close callback
    }

    public func start(after delay: Duration, repeat interval: Duration? = nil) {
        guard !isClosing else { return }
        uv_timer_start(timer, { handle in
            Unmanaged<LoopTimer>.fromOpaque(handle!.pointee.data).takeUnretainedValue().action()
        }, delay.milliseconds, interval.map { max(1, $0.milliseconds) } ?? 0)
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
        onClosed = closed
        uv_close(uvHandle(timer)) { handle in
            let timer = Unmanaged<LoopTimer>.fromOpaque(handle!.pointee.data)
            let closed = timer.takeUnretainedValue().onClosed
            timer.release()
            UnsafeMutableRawPointer(handle!).deallocate()
            closed?()
        }
    }
}

/// Runs `action` once per loop iteration, after the poll for I/O (a `uv_check_t`): where work gathered by
/// callbacks (events, results) is handed on in one batch. Loop thread only; closed only by `close()`.
public final class IterationHook {
    private let check = uvAllocate(uv_check_t.self)
    private let action: () -> Void
    private var isClosing = false
    private var onClosed: (() -> Void)?

    public init(on loop: EventLoop, _ action: @escaping () -> Void) {
        loop.preconditionInEventLoop()
        self.action = action
        uv_check_init(loop.uv, check)
        check.pointee.data = Unmanaged.passRetained(self).toOpaque()
        uv_check_start(check) { handle in
            Unmanaged<IterationHook>.fromOpaque(handle!.pointee.data).takeUnretainedValue().action()
        }
        // A check handle never keeps the loop running by itself.
        uv_unref(uvHandle(check))
    }

    /// Closes the hook; `closed` runs (on the loop) once libuv is done with it.
    public func close(then closed: (() -> Void)? = nil) {
        guard !isClosing else { return }
        isClosing = true
        onClosed = closed
        uv_close(uvHandle(check)) { handle in
            let hook = Unmanaged<IterationHook>.fromOpaque(handle!.pointee.data)
            let closed = hook.takeUnretainedValue().onClosed
            hook.release()
            UnsafeMutableRawPointer(handle!).deallocate()
            closed?()
        }
    }
}

/// Runs `action` on every loop iteration while started, without blocking in the poll (a `uv_idle_t`): for
/// work split over iterations, such as starting ports in batches. Loop thread only; closed only by `close()`.
public final class IdleHook {
    private let idle = uvAllocate(uv_idle_t.self)
    private let action: () -> Void
    private var isClosing = false
    private var onClosed: (() -> Void)?

    public init(on loop: EventLoop, _ action: @escaping () -> Void) {
        loop.preconditionInEventLoop()
        self.action = action
        uv_idle_init(loop.uv, idle)
        idle.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    public func start() {
        guard !isClosing else { return }
        uv_idle_start(idle) { handle in
            Unmanaged<IdleHook>.fromOpaque(handle!.pointee.data).takeUnretainedValue().action()
        }
    }

    public func stop() {
        if !isClosing { uv_idle_stop(idle) }
    }

    public func close(then closed: (() -> Void)? = nil) {
        guard !isClosing else { return }
        isClosing = true
        onClosed = closed
        uv_close(uvHandle(idle)) { handle in
            let hook = Unmanaged<IdleHook>.fromOpaque(handle!.pointee.data)
            let closed = hook.takeUnretainedValue().onClosed
            hook.release()
            UnsafeMutableRawPointer(handle!).deallocate()
            closed?()
        }
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
