import CLibUV
import Synchronization

/// Signals caught on a loop from the moment `watch` returns. Before that, and again after the first one is
/// caught or `stop()`, they have their default action, which for SIGINT and SIGTERM ends the process. A command
/// arms the watch before it starts anything it must clean up (listeners, worker processes), so a signal during
/// start-up is remembered and handled once start-up is over, instead of ending the process half-way.
/// A second SIGINT after the first one therefore still ends the process at once, as people expect of Ctrl-C.
public final class SignalWatch: @unchecked Sendable {  // `handles` is touched on the loop's thread only
    public let loop: EventLoop
    private let state = Mutex<State>(State())
    private var handles: [UnsafeMutablePointer<uv_signal_t>] = []

    private struct State {
        var caught: Int32?
        var waiter: CheckedContinuation<Int32, any Error>?
    }

    private init(loop: EventLoop) { self.loop = loop }

    /// Installs libuv's handlers for `signals` on `loop` and returns once they are in place.
    public static func watch(_ signals: [Int32], on loop: EventLoop) async -> SignalWatch {
        let watch = SignalWatch(loop: loop)
        await withCheckedContinuation { (armed: CheckedContinuation<Void, Never>) in
            loop.execute {
                watch.start(signals)
                armed.resume()
            }
        }
        return watch
    }

    /// The first signal caught, at once if it already was. Throws `CancellationError` when the task is cancelled.
    public func next() async throws -> Int32 {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
                let ready = state.withLock { state -> Result<Int32, any Error>? in
                    if let caught = state.caught { return .success(caught) }
                    // The flag is set before the cancellation handler runs, and both sides hold the lock.
                    if Task.isCancelled { return .failure(CancellationError()) }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Gives the signals their default action back. Call it before the loop shuts down (a watching handle keeps
    /// the loop running).
    public func stop() {
        loop.execute { self.close() }
    }

    private func start(_ signals: [Int32]) {
        let me = Unmanaged.passRetained(self).toOpaque()  // released when the last handle has closed
        for signal in signals {
            let handle = uvAllocate(uv_signal_t.self)
            uv_signal_init(loop.uv, handle)
            handle.pointee.data = me
            uv_signal_start(handle, { handle, signal in
                Unmanaged<SignalWatch>.fromOpaque(handle!.pointee.data).takeUnretainedValue().caught(signal)
            }, signal)
            handles.append(handle)
        }
        if signals.isEmpty { Unmanaged<SignalWatch>.fromOpaque(me).release() }
    }

    private func caught(_ signal: Int32) {
        let waiter = state.withLock { state -> CheckedContinuation<Int32, any Error>? in
            if state.caught == nil { state.caught = signal }
            defer { state.waiter = nil }
            return state.waiter
        }
        close()
        waiter?.resume(returning: signal)
    }

    /// Idempotent; the watch is released when its last handle has closed.
    private func close() {
        let handles = self.handles
        self.handles = []
        for (index, handle) in handles.enumerated() {
            // Only the last one carries the watch's reference; the others' callbacks just free their handle.
            if index < handles.count - 1 { handle.pointee.data = nil }
            uv_close(uvHandle(handle)) { handle in
                let data = handle!.pointee.data
                UnsafeMutableRawPointer(handle!).deallocate()
                if let data { Unmanaged<SignalWatch>.fromOpaque(data).release() }
            }
        }
    }
}
