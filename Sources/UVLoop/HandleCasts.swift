import CLibUV

// libuv's C "inheritance": every handle starts with the uv_handle_t fields, every stream with uv_stream_t's.

@inline(__always)
func uvHandle<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<uv_handle_t> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_handle_t.self)
}

@inline(__always)
func uvStream(_ p: UnsafeMutablePointer<uv_tcp_t>) -> UnsafeMutablePointer<uv_stream_t> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_stream_t.self)
}

@inline(__always)
func uvTCP(_ p: UnsafeMutablePointer<uv_stream_t>) -> UnsafeMutablePointer<uv_tcp_t> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_tcp_t.self)
}

/// Allocates zeroed memory for a handle or request. Pair with `uvFree` in the close (or completion) callback.
func uvAllocate<T>(_ type: T.Type) -> UnsafeMutablePointer<T> {
    let p = UnsafeMutablePointer<T>.allocate(capacity: 1)
    UnsafeMutableRawPointer(p).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<T>.stride)
    return p
}

func uvFree<T>(_ p: UnsafeMutablePointer<T>) { p.deallocate() }

/// Close callback that frees a handle allocated with `uvAllocate`.
let uvFreeOnClose: uv_close_cb = { handle in
    UnsafeMutableRawPointer(handle!).deallocate()
}
