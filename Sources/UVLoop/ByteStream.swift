import CLibUV

/// What a `ByteStream` tells its owner. Every call comes on the stream's loop thread, from a libuv callback.
public protocol ByteStreamDelegate: AnyObject {
    /// Bytes arrived. `bytes` points into the loop's read buffer: valid only during the call.
    func received(_ bytes: UnsafeRawBufferPointer, on stream: ByteStream)
    /// The peer closed its side (`error` nil) or reading failed; reading has stopped. The stream stays open
    /// (writes queued before may still go out) until `close()`.
    func ended(_ stream: ByteStream, error: UVError?)
    /// A queued write of `bytes` finished (`error`: it failed, or was cancelled by a close); `queuedBytes` is
    /// lower (0 when everything was written).
    func wrote(_ bytes: Int, on stream: ByteStream, error: UVError?)
    /// The handle is closed and released; the stream is done and calls nothing more.
    func closed(_ stream: ByteStream)
}

/// A connected byte stream of the callback kit: a TCP connection or a pipe, on one loop, for hot paths that
/// cannot afford a task per connection (a listener holding thousands of them). Writes go out at once when the
/// socket takes them (`uv_try_write`) and are copied and queued otherwise; reading can be paused and resumed
/// (backpressure: pause while `queuedBytes` is high, resume on `wrote`).
///
/// Loop thread only. The handle is closed only by `close()`, and freed in its close callback.
public final class ByteStream {
    public let loop: EventLoop
    /// Held strongly until the handle has closed (then let go): every handle is closed, so no cycle outlives it.
    public var delegate: (any ByteStreamDelegate)?
    /// The peer and local addresses of a TCP stream (read once, at accept or connect).
    public private(set) var peer: SocketAddress?
    public private(set) var local: SocketAddress?
    /// Bytes read at most per read callback (the loop's read buffer is 64 KiB).
    public var readLimit = EventLoop.readBufferSize
    /// A number the owner may use to find its own state for this stream.
    public var tag = 0

    let handle: UnsafeMutableRawPointer
    private let isTCP: Bool
    public private(set) var isReading = false
    public private(set) var isClosing = false
    private var writesInFlight = 0

    /// Loop thread only. A TCP handle not yet connected (for `TCPListenSocket` to accept into).
    init(tcpOn loop: EventLoop) throws(UVError) {
        loop.preconditionInEventLoop()
        self.loop = loop
        isTCP = true
        let tcp = uvAllocate(uv_tcp_t.self)
        let rc = uv_tcp_init(loop.uv, tcp)
        if rc < 0 {
            uvFree(tcp)
            throw UVError(rc)
        }
        handle = UnsafeMutableRawPointer(tcp)
        tcp.pointee.data = Unmanaged.passRetained(self).toOpaque()  // released in the close callback
    }

    /// Loop thread only. A pipe (for a child process's stdio, see `ChildProcess`).
    init(pipeOn loop: EventLoop) throws(UVError) {
        loop.preconditionInEventLoop()
        self.loop = loop
        isTCP = false
        let pipe = uvAllocate(uv_pipe_t.self)
        let rc = uv_pipe_init(loop.uv, pipe, 0)
        if rc < 0 {
            uvFree(pipe)
            throw UVError(rc)
        }
        handle = UnsafeMutableRawPointer(pipe)
        pipe.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    /// A stream on an inherited descriptor (a worker's stdin or stdout pipe). Loop thread only.
    public static func open(pipe fd: Int32, on loop: EventLoop) throws(UVError) -> ByteStream {
        let stream = try ByteStream(pipeOn: loop)
        let rc = uv_pipe_open(stream.handle.assumingMemoryBound(to: uv_pipe_t.self), fd)
        if rc < 0 {
            stream.close()
            throw UVError(rc)
        }
        return stream
    }

    var stream: UnsafeMutablePointer<uv_stream_t> { handle.assumingMemoryBound(to: uv_stream_t.self) }

    @inline(__always)
    static func from(_ handle: UnsafeRawPointer?) -> ByteStream {
        Unmanaged<ByteStream>.fromOpaque(handle!.assumingMemoryBound(to: uv_handle_t.self).pointee.data).takeUnretainedValue()
    }

    /// Reads the addresses of a TCP stream (after accept or connect).
    func readAddresses() {
        guard isTCP else { return }
        let tcp = handle.assumingMemoryBound(to: uv_tcp_t.self)
        peer = SocketAddress.reading { uv_tcp_getpeername(tcp, $0, $1) }
        local = SocketAddress.reading { uv_tcp_getsockname(tcp, $0, $1) }
    }

    // MARK: reading

    public func startReading() {
        guard !isReading, !isClosing else { return }
        isReading = true
        let rc = uv_read_start(stream, { handle, _, buf in
            let stream = ByteStream.from(handle)
            let raw = stream.loop.readBuffer
            buf!.pointee = uv_buf_init(raw.baseAddress!.assumingMemoryBound(to: CChar.self),
                                       UInt32(min(stream.readLimit, raw.count)))
        }, { handle, nread, buf in
            let stream = ByteStream.from(handle)
            if nread > 0 {
                stream.delegate?.received(UnsafeRawBufferPointer(start: buf!.pointee.base, count: nread), on: stream)
            } else if nread < 0 {
                stream.stopReading()
                stream.delegate?.ended(stream, error: nread == Int(UV_EOF.rawValue) ? nil : UVError(Int32(nread)))
            }
        })
        if rc < 0 {
            isReading = false
            delegate?.ended(self, error: UVError(rc))
        }
    }

    public func stopReading() {
        guard isReading else { return }
        isReading = false
        if !isClosing { uv_read_stop(stream) }
    }

    // MARK: writing

    /// Bytes waiting in the write queue (libuv's count).
    public var queuedBytes: Int { isClosing ? 0 : Int(uv_stream_get_write_queue_size(stream)) }

    /// Writes `bytes`: what the socket takes at once, the rest copied and queued (reported by `wrote`).
    /// Returns how many bytes went out at once, or the error that makes the stream unusable (close it then).
    @discardableResult
    public func write(_ bytes: UnsafeRawBufferPointer) -> Result<Int, UVError> {
        guard !isClosing else { return .failure(.badHandle) }
        guard bytes.count > 0 else { return .success(0) }
        var written = 0
        if writesInFlight == 0 {
            var buf = uv_buf_init(UnsafeMutablePointer(mutating: bytes.baseAddress!.assumingMemoryBound(to: CChar.self)),
                                  UInt32(bytes.count))
            let rc = uv_try_write(stream, &buf, 1)
            if rc > 0 {
                written = Int(rc)
            } else if rc < 0 && rc != UV_EAGAIN.rawValue {
                return .failure(UVError(rc))
            }
        }
        guard written < bytes.count else { return .success(written) }
        if let error = queue(UnsafeRawBufferPointer(rebasing: bytes[written...])) { return .failure(error) }
        return .success(written)
    }

    @discardableResult
    public func write(_ bytes: [UInt8]) -> Result<Int, UVError> {
        bytes.withUnsafeBytes { write($0) }
    }

    /// Copies `rest` and hands it to uv_write. The request and its bytes are one allocation, freed when libuv
    /// calls back.
    private func queue(_ rest: UnsafeRawBufferPointer) -> UVError? {
        // The request, the byte count and the bytes: one block, freed when libuv calls back.
        let header = MemoryLayout<uv_write_t>.stride + 16
        let block = UnsafeMutableRawPointer.allocate(byteCount: header + rest.count, alignment: 16)
        UnsafeMutableRawPointer(block).initializeMemory(as: UInt8.self, repeating: 0, count: header)
        block.storeBytes(of: rest.count, toByteOffset: MemoryLayout<uv_write_t>.stride, as: Int.self)
        (block + header).copyMemory(from: rest.baseAddress!, byteCount: rest.count)
        let request = block.assumingMemoryBound(to: uv_write_t.self)
        var buf = uv_buf_init((block + header).assumingMemoryBound(to: CChar.self), UInt32(rest.count))
        writesInFlight += 1
        let rc = uv_write(request, stream, &buf, 1) { request, status in
            let stream = ByteStream.from(UnsafeRawPointer(request!.pointee.handle))
            let raw = UnsafeMutableRawPointer(request!)
            let count = raw.load(fromByteOffset: MemoryLayout<uv_write_t>.stride, as: Int.self)
            raw.deallocate()
            stream.writesInFlight -= 1
            stream.delegate?.wrote(count, on: stream, error: status < 0 ? UVError(status) : nil)
        }
        if rc < 0 {
            writesInFlight -= 1
            block.deallocate()
            return UVError(rc)
        }
        return nil
    }

    /// Whether writes are still queued.
    public var isWriting: Bool { writesInFlight > 0 }

    // MARK: options

    /// Sets an integer socket option on a TCP stream's socket.
    public func setOption(_ option: SocketOption, _ value: Int32) {
        var fd: uv_os_fd_t = -1
        guard !isClosing, uv_fileno(handle.assumingMemoryBound(to: uv_handle_t.self), &fd) == 0 else { return }
        option.set(on: fd, value)
    }

    // MARK: closing

    /// Closes the stream (`reset`: TCP abort with RST instead of a FIN). Queued writes are cancelled (their
    /// `wrote` comes with ECANCELED first); `closed` comes last. Idempotent.
    public func close(reset: Bool = false) {
        guard !isClosing else { return }
        isClosing = true
        isReading = false
        let onClose: uv_close_cb = { handle in
            let stream = Unmanaged<ByteStream>.fromOpaque(handle!.pointee.data).takeRetainedValue()
            UnsafeMutableRawPointer(handle!).deallocate()
            let delegate = stream.delegate
            stream.delegate = nil
            delegate?.closed(stream)
        }
        if reset && isTCP, uv_tcp_close_reset(handle.assumingMemoryBound(to: uv_tcp_t.self), onClose) == 0 { return }
        uv_close(handle.assumingMemoryBound(to: uv_handle_t.self), onClose)
    }
}
