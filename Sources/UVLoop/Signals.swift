import CLibUV

extension EventLoop {
    /// Waits until the process receives one of `signals` (SIGINT, SIGTERM...); returns which. The signal handlers
    /// are libuv's (on this loop) and are removed again before this returns or throws on cancellation.
    public func waitForSignal(_ signals: [Int32]) async throws -> Int32 {
        try await LoopBound(self).waitForSignal(signals)
    }
}

extension LoopBound {
    func waitForSignal(_ signals: [Int32]) async throws -> Int32 {
        try await loop.await(timeout: nil) { (completion: Completion<Int32>) in
            let watcher = SignalWatcher(loop: loop, signals: signals, completion: completion)
            completion.abort = { _ in watcher.close() }
        }
    }
}

/// uv_signal_t handles that resume a completion with the first signal seen.
private final class SignalWatcher {
    private var handles: [UnsafeMutablePointer<uv_signal_t>] = []
    private let completion: Completion<Int32>
    private let total: Int

    init(loop: EventLoop, signals: [Int32], completion: Completion<Int32>) {
        self.completion = completion
        total = signals.count
        let me = Unmanaged.passRetained(self).toOpaque()  // released when the last handle closed
        for signal in signals {
            let handle = uvAllocate(uv_signal_t.self)
            uv_signal_init(loop.uv, handle)
            handle.pointee.data = me
            uv_signal_start(handle, { handle, signal in
                let watcher = Unmanaged<SignalWatcher>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                watcher.completion.succeed(signal)
                watcher.close()
            }, signal)
            handles.append(handle)
        }
    }

    /// Stops watching. Idempotent; the watcher is freed when its last handle has closed.
    func close() {
        let handles = self.handles
        self.handles = []
        for handle in handles {
            uv_close(uvHandle(handle)) { handle in
                let watcher = Unmanaged<SignalWatcher>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                UnsafeMutableRawPointer(handle!).deallocate()
                watcher.closed += 1
                if watcher.closed == watcher.total { Unmanaged.passUnretained(watcher).release() }
            }
        }
    }

    private var closed = 0
}
