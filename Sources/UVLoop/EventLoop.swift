import CLibUV
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One libuv loop on a thread of its own, exposed to Swift concurrency as a serial executor and a task executor.
///
/// Jobs and closures enqueued from other threads go through a locked inbox and one `uv_async_send` (sends coalesce,
/// so the whole inbox is drained per wake-up). Jobs enqueued on the loop's own thread go to a local queue drained
/// by a `uv_prepare` handle before the loop polls: no lock, no syscall. Everything that touches `uv` must run on the
/// loop's thread: inside a job of this executor, inside `execute`, or inside a libuv callback of this loop.
public final class EventLoop: SerialExecutor, TaskExecutor, @unchecked Sendable {
    private enum Work: Sendable {
        case job(UnownedJob)
        case call(@Sendable () -> Void)
    }

    private struct Inbox {
        var work: [Work] = []
        var shuttingDown = false
    }

    /// A short name for logs (`loop-0`, ...).
    public let name: String
    /// The raw libuv loop. Loop thread only.
    let uv: UnsafeMutablePointer<uv_loop_t>
    /// The raw loop for a C library's own libuv adapter (hiredis's, in UVRedis), untyped so that libuv's types
    /// stay in this module. Loop thread only, like `uv`.
    package var rawLoop: UnsafeMutableRawPointer { UnsafeMutableRawPointer(uv) }

    private let wakeup: UnsafeMutablePointer<uv_async_t>
    private let drainer: UnsafeMutablePointer<uv_prepare_t>
    private let inbox = Mutex(Inbox())
    private let loopThread = Atomic<UInt>(0)
    private let stopped = Atomic<Bool>(false)
    private let leftOpen = Atomic<Int>(0)

    /// After `shutdown()`: how many handles were still open (never closed by their owner) when the loop stopped.
    /// 0 for a program that cleans up after itself; tests assert it.
    public var handlesLeftOpen: Int { leftOpen.load(ordering: .acquiring) }
    /// A scratch buffer that libuv reads into for the async face's connections and sockets: what a read
    /// returns is copied out in the read callback, so one buffer serves every handle of the loop and an idle
    /// connection costs no buffer at all. Loop thread only; allocated on first use.
    var readBuffer: UnsafeMutableRawBufferPointer {
        if let scratch { return scratch }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: EventLoop.readBufferSize, alignment: 16)
        scratch = buffer
        return buffer
    }
    static let readBufferSize = 65536
    private var scratch: UnsafeMutableRawBufferPointer?
    // Loop thread only.
    private var local: [Work] = []
    private var spare: [Work] = []
    private var thread = pthread_t()

    /// libuv writes to sockets with write(2)/writev(2), which cannot take MSG_NOSIGNAL: with SIGPIPE at its
    /// default, a peer that resets while two writes are queued kills the process on the second (EPIPE). Peers of
    /// listen and serve are hostile, and a program embedding the library cannot be expected to know this, so the
    /// first loop ignores SIGPIPE process-wide (as SwiftNIO does on Linux); errors come back as EPIPE instead.
    private static let ignoreSIGPIPE: Void = { signal(SIGPIPE, SIG_IGN) }()

    /// Opens the loop and starts its thread. Throws when the process is out of descriptors (the loop needs an
    /// epoll instance and an eventfd) or cannot start a thread; nothing is left open then.
    public init(name: String = "loop") throws(UVError) {
        EventLoop.ignoreSIGPIPE
        self.name = name
        uv = uvAllocate(uv_loop_t.self)
        wakeup = uvAllocate(uv_async_t.self)
        drainer = uvAllocate(uv_prepare_t.self)
        var rc = uv_loop_init(uv)
        if rc != 0 {
            uvFree(uv); uvFree(wakeup); uvFree(drainer)
            throw UVError(rc)
        }
        rc = uv_async_init(uv, wakeup) { handle in
            EventLoop.from(handle!.pointee.data).drainInbox()
        }
        if rc != 0 {
            uv_loop_close(uv)
            uvFree(uv); uvFree(wakeup); uvFree(drainer)
            throw UVError(rc)
        }
        uv_prepare_init(uv, drainer)
        uv_prepare_start(drainer) { handle in
            EventLoop.from(handle!.pointee.data).drainLocal()
        }
        // The prepare handle must not keep the loop alive by itself; the async handle does until shutdown.
        uv_unref(uvHandle(drainer))
        let me = Unmanaged.passUnretained(self).toOpaque()
        wakeup.pointee.data = me
        drainer.pointee.data = me
        uv.pointee.data = me

        let retained = Unmanaged.passRetained(self).toOpaque()
        let started = pthread_create(&thread, nil, { arg in
            let loop = Unmanaged<EventLoop>.fromOpaque(arg!).takeRetainedValue()
            loop.threadMain()
            return nil
        }, retained)
        if started != 0 {
            Unmanaged<EventLoop>.fromOpaque(retained).release()
            uv_close(uvHandle(wakeup), nil)
            uv_close(uvHandle(drainer), nil)
            uv_run(uv, UV_RUN_DEFAULT)
            uv_loop_close(uv)
            uvFree(uv); uvFree(wakeup); uvFree(drainer)
            throw UVError(-started)
        }
    }

    @inline(__always)
    static func from(_ data: UnsafeMutableRawPointer?) -> EventLoop {
        Unmanaged<EventLoop>.fromOpaque(data!).takeUnretainedValue()
    }

    /// The loop a libuv handle belongs to.
    static func of<T>(handle: UnsafeMutablePointer<T>) -> EventLoop {
        from(uvHandle(handle).pointee.loop.pointee.data)
    }

    /// Loop iterations a shutdown grants to closes under way before it closes what is left (see `threadMain`).
    static let settlingRounds = 16

    private func threadMain() {
        loopThread.store(UInt(pthread_self()), ordering: .releasing)
        uv_run(uv, UV_RUN_DEFAULT)
        // Closes already under way finish first: a close callback often closes the next handle of its owner
        // (a slab's last slot, then the owner's timers), and those owners are not "left open". A few rounds
        // settle such chains; handles nobody will ever close keep the loop alive, hence the bound.
        for _ in 0..<Self.settlingRounds where uv_loop_alive(uv) != 0 {
            uv_run(uv, UV_RUN_NOWAIT)
        }
        // Whatever an owner left open is counted and closed now (its memory is abandoned: nobody closed it).
        var open = 0
        uv_walk(uv, { handle, open in
            guard uv_is_closing(handle) == 0 else { return }
            open!.assumingMemoryBound(to: Int.self).pointee += 1
            uv_close(handle, nil)
        }, &open)
        uv_run(uv, UV_RUN_DEFAULT)
        uv_loop_close(uv)
        leftOpen.store(open, ordering: .releasing)
        stopped.store(true, ordering: .releasing)
    }

    /// The loop's clock in milliseconds (libuv's, cached once per iteration). Loop thread only.
    public var now: UInt64 { uv_now(uv) }

    /// Refreshes `now` (after long work within one iteration). Loop thread only.
    public func updateTime() { uv_update_time(uv) }

    /// True when called on this loop's thread.
    public var inEventLoop: Bool {
        loopThread.load(ordering: .acquiring) == UInt(pthread_self())
    }

    /// Traps unless called on this loop's thread.
    public func preconditionInEventLoop(file: StaticString = #fileID, line: UInt = #line) {
        precondition(inEventLoop, "not on \(name)'s thread", file: file, line: line)
    }

    // MARK: Executor

    public func enqueue(_ job: consuming ExecutorJob) {
        submit(.job(UnownedJob(job)))
    }

    /// Runs `body` on the loop's thread, soon: never inline, even when called from the loop.
    public func execute(_ body: @escaping @Sendable () -> Void) {
        submit(.call(body))
    }

    private func submit(_ work: Work) {
        if inEventLoop {
            local.append(work)
            return
        }
        let accepted = inbox.withLock { inbox -> Bool in
            guard !inbox.shuttingDown else { return false }
            inbox.work.append(work)
            return true
        }
        if accepted { uv_async_send(wakeup) }
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    public func checkIsolated() {
        preconditionInEventLoop()
    }

    public func isIsolatingCurrentContext() -> Bool? {
        inEventLoop
    }

    private func run(_ work: Work) {
        switch work {
        case .job(let job):
            job.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
        case .call(let body):
            body()
        }
    }

    private func drainLocal() {
        while !local.isEmpty {
            swap(&local, &spare)
            for work in spare { run(work) }
            spare.removeAll(keepingCapacity: true)
        }
    }

    private func drainInbox() {
        let (batch, shuttingDown) = inbox.withLock { inbox in
            let batch = inbox.work
            inbox.work.removeAll(keepingCapacity: true)
            return (batch, inbox.shuttingDown)
        }
        for work in batch { run(work) }
        drainLocal()
        if shuttingDown {
            uv_close(uvHandle(wakeup), nil)
            uv_close(uvHandle(drainer), nil)
            // Handles an owner never closed would keep uv_run going forever: stop here, and count them.
            uv_stop(uv)
        }
    }

    /// Stops the loop once its queued work has run, closes what is still open, and joins its thread.
    /// Must not be called from the loop's own thread.
    public func shutdown() {
        precondition(!inEventLoop, "shutdown() called on the loop's own thread")
        let first = inbox.withLock { inbox -> Bool in
            defer { inbox.shuttingDown = true }
            return !inbox.shuttingDown
        }
        guard first else { return }
        uv_async_send(wakeup)
        pthread_join(thread, nil)
        uvFree(wakeup)
        uvFree(drainer)
        uvFree(uv)
        scratch?.deallocate()
    }
}


/// An actor whose executor is a loop: its methods run on the loop's thread, so the compiler, not a comment,
/// keeps libuv calls there. C callbacks of its handles run on that thread too.
public protocol LoopActor: Actor {
    nonisolated var loop: EventLoop { get }
}

extension LoopActor {
    public nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
}

extension EventLoop {
    /// Runs `body` on this loop and returns its value (from any context).
    public func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { (done: CheckedContinuation<T, Never>) in
            execute { done.resume(returning: body()) }
        }
    }
}
