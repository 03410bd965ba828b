import CLibUV

/// A one-shot timer that runs a closure on its loop: the deadline behind every await of the async API.
/// (The sweep's hot path uses one coarse timer over a deadline wheel instead; see PortsweepEngine.)
final class OneShotTimer {
    private let handle: UnsafeMutablePointer<uv_timer_t>
    private var action: (() -> Void)?

    /// Loop thread only. The timer keeps itself alive until it fired or was cancelled and its handle closed.
    init(on loop: EventLoop, after duration: Duration, _ action: @escaping () -> Void) {
        loop.preconditionInEventLoop()
        handle = uvAllocate(uv_timer_t.self)
        self.action = action
        uv_timer_init(loop.uv, handle)
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        uv_timer_start(handle, { handle in
            let timer = Unmanaged<OneShotTimer>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            let action = timer.action
            timer.cancel()
            action?()
        }, duration.milliseconds, 0)
    }

    /// Stops the timer without running its action. Idempotent.
    func cancel() {
        guard action != nil else { return }
        action = nil
        uv_close(uvHandle(handle)) { handle in
            Unmanaged<OneShotTimer>.fromOpaque(handle!.pointee.data).release()
            UnsafeMutableRawPointer(handle!).deallocate()
        }
    }
}

extension Duration {
    /// Whole milliseconds, rounded up, at least 0.
    public var milliseconds: UInt64 {
        let (s, atto) = components
        if s < 0 { return 0 }
        return UInt64(s) * 1000 + UInt64((atto + 999_999_999_999_999) / 1_000_000_000_000_000)
    }
}

/// The single resumption point of one pending operation: resumed once, by completion, deadline or cancellation,
/// whichever comes first. Loop-confined; `@unchecked Sendable` only so a cancellation handler can hop it to the loop.
final class Completion<Value: Sendable>: @unchecked Sendable {
    private var continuation: CheckedContinuation<Value, any Error>?
    private var deadline: OneShotTimer?
    /// Undoes the operation's registration after a deadline or cancellation (stop reading, close the handle...).
    var abort: ((any Error) -> Void)?

    var isPending: Bool { continuation != nil }

    fileprivate init() {}

    fileprivate func arm(_ continuation: CheckedContinuation<Value, any Error>, loop: EventLoop, timeout: Duration?) {
        self.continuation = continuation
        if let timeout {
            deadline = OneShotTimer(on: loop, after: timeout) { [self] in fail(UVError.timedOut) }
        }
    }

    func succeed(_ value: Value) { finish(.success(value)) }

    func fail(_ error: any Error) {
        guard continuation != nil else { return }
        let abort = self.abort
        self.abort = nil
        finish(.failure(error))
        abort?(error)
    }

    private func finish(_ result: Result<Value, any Error>) {
        guard let continuation else { return }
        self.continuation = nil
        deadline?.cancel()
        deadline = nil
        abort = nil
        continuation.resume(with: result)
    }
}

extension EventLoop {
    /// Suspends the caller (which runs on this loop) until `start`'s operation completes it, `timeout` passes, or
    /// the task is cancelled. `start` runs at once, on the loop, and registers the operation with libuv.
    func await<Value: Sendable>(
        timeout: Duration?,
        isolation: isolated (any Actor)? = #isolation,
        _ start: (Completion<Value>) -> Void
    ) async throws -> Value {
        preconditionInEventLoop()
        let completion = Completion<Value>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation(isolation: isolation) { continuation in
                completion.arm(continuation, loop: self, timeout: timeout)
                if Task.isCancelled {
                    completion.fail(CancellationError())
                } else {
                    start(completion)
                }
            }
        } onCancel: {
            self.execute { completion.fail(CancellationError()) }
        }
    }

    /// Sleeps for `duration` on this loop's timer (callable from any context; the timer lives on this loop).
    public func sleep(for duration: Duration) async throws {
        try await LoopBound(self).sleep(for: duration)
    }
}

/// An actor on a loop's executor, for one-off work that must run there.
actor LoopBound: LoopActor {
    nonisolated let loop: EventLoop
    init(_ loop: EventLoop) { self.loop = loop }

    func sleep(for duration: Duration) async throws {
        try await loop.await(timeout: nil) { (completion: Completion<Void>) in
            let timer = OneShotTimer(on: loop, after: duration) { completion.succeed(()) }
            completion.abort = { _ in timer.cancel() }
        }
    }
}
