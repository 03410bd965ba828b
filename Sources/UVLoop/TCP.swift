import CLibUV

/// The loop-confined state of one `uv_tcp_t`: the handle, its pending operations, its close.
/// Retained by the handle (through `data`) from init until the close callback, which also frees the handle.
final class TCPCore: @unchecked Sendable {
    let loop: EventLoop
    let tcp: UnsafeMutablePointer<uv_tcp_t>
    private(set) var isClosed = false
    var reader: Completion<[UInt8]>?
    var acceptor: Completion<Void>?
    var backlog = 0
    var readLimit = 65536
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []
    /// The close callback has run (the handle's memory is gone: never look at it again).
    private var closeCompleted = false

    /// Loop thread only. `family` creates the socket at once (so options can be set before connect or bind).
    init(loop: EventLoop, family: IPAddress.Family? = nil) throws(UVError) {
        loop.preconditionInEventLoop()
        self.loop = loop
        tcp = uvAllocate(uv_tcp_t.self)
        let rc: Int32
        if let family {
            rc = uv_tcp_init_ex(loop.uv, tcp, UInt32(family == .v4 ? AF_INET : AF_INET6))
        } else {
            rc = uv_tcp_init(loop.uv, tcp)
        }
        if rc < 0 {
            uvFree(tcp)
            throw UVError(rc)
        }
        tcp.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    static func from(_ handle: UnsafeMutablePointer<uv_tcp_t>) -> TCPCore {
        Unmanaged<TCPCore>.fromOpaque(handle.pointee.data).takeUnretainedValue()
    }

    static func from(_ stream: UnsafeMutablePointer<uv_stream_t>?) -> TCPCore {
        from(uvTCP(stream!))
    }

    func setOption(_ level: Int32, _ name: Int32, _ value: Int32) {
        var fd: uv_os_fd_t = -1
        var value = value
        if uv_fileno(uvHandle(tcp), &fd) == 0 {
            setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    func address(peer: Bool) -> SocketAddress? {
        SocketAddress.reading { peer ? uv_tcp_getpeername(tcp, $0, $1) : uv_tcp_getsockname(tcp, $0, $1) }
    }

    // MARK: reading

    func startReading(_ completion: Completion<[UInt8]>) {
        guard !isClosed else { return completion.fail(UVError.badHandle) }
        reader = completion
        completion.abort = { [self] _ in
            reader = nil
            if !isClosed { uv_read_stop(uvStream(tcp)) }
        }
        let rc = uv_read_start(uvStream(tcp), { handle, _, buf in
            let core = TCPCore.from(uvTCP(UnsafeMutableRawPointer(handle!).assumingMemoryBound(to: uv_stream_t.self)))
            let raw = core.loop.readBuffer
            buf!.pointee = uv_buf_init(raw.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(min(core.readLimit, raw.count)))
        }, { stream, nread, _ in
            let core = TCPCore.from(stream)
            guard nread != 0 else { return }
            uv_read_stop(stream)
            guard let reader = core.reader else { return }
            core.reader = nil
            if nread > 0 {
                reader.succeed(Array(UnsafeRawBufferPointer(rebasing: core.loop.readBuffer[0..<nread])))
            } else if nread == Int(UV_EOF.rawValue) {
                reader.succeed([])
            } else {
                reader.fail(UVError(Int32(nread)))
            }
        })
        if rc < 0 { completion.fail(UVError(rc)) }
    }

    // MARK: closing

    /// Closes the handle (with a reset when `reset` and the socket is connected). Idempotent.
    func close(reset: Bool = false) {
        guard !isClosed else { return }
        isClosed = true
        let onClose: uv_close_cb = { handle in
            let tcp = UnsafeMutableRawPointer(handle!).assumingMemoryBound(to: uv_tcp_t.self)
            let core = Unmanaged<TCPCore>.fromOpaque(tcp.pointee.data).takeRetainedValue()
            core.closeCompleted = true
            core.reader?.fail(UVError.cancelled)
            core.acceptor?.fail(UVError.cancelled)
            let waiters = core.closeWaiters
            core.closeWaiters = []
            for waiter in waiters { waiter.resume() }
            uvFree(tcp)
        }
        if !reset || uv_tcp_close_reset(tcp, onClose) != 0 {
            uv_close(uvHandle(tcp), onClose)
        }
    }

    func waitClosed(_ continuation: CheckedContinuation<Void, Never>) {
        if closeCompleted { continuation.resume(); return }
        closeWaiters.append(continuation)
    }

    /// For a handle dropped without `close()`: close it on its loop.
    func closeFromAnywhere() {
        if loop.inEventLoop { close() } else { loop.execute { self.close() } }
    }
}

/// A connected TCP stream on one loop. Every await has a deadline; every method runs on the loop.
public actor TCPConnection: LoopActor {
    public nonisolated let loop: EventLoop
    nonisolated let core: TCPCore

    init(core: TCPCore) {
        self.loop = core.loop
        self.core = core
    }

    deinit { core.closeFromAnywhere() }

    /// Connects to `address` from a new socket on `loop`. `reuseAddress` sets SO_REUSEADDR before connecting,
    /// so the socket's local port, in TIME_WAIT later, never blocks a listener on that port.
    public static func connect(
        to address: SocketAddress, on loop: EventLoop, timeout: Duration, reuseAddress: Bool = true
    ) async throws -> TCPConnection {
        try await LoopBound(loop).connect(to: address, timeout: timeout, reuseAddress: reuseAddress)
    }

    public var localAddress: SocketAddress? { core.address(peer: false) }
    public var remoteAddress: SocketAddress? { core.address(peer: true) }

    /// Reads what is available, at most `maxBytes`; an empty array means the peer closed its side.
    public func read(maxBytes: Int = 65536, timeout: Duration) async throws -> [UInt8] {
        core.readLimit = max(1, min(maxBytes, 65536))
        return try await loop.await(timeout: timeout) { core.startReading($0) }
    }

    /// Reads until exactly `count` bytes arrived (or throws `UVError.endOfFile` if the peer closed first).
    public func read(exactly count: Int, timeout: Duration) async throws -> [UInt8] {
        var out: [UInt8] = []
        while out.count < count {
            let chunk = try await read(maxBytes: count - out.count, timeout: timeout)
            if chunk.isEmpty { throw UVError.endOfFile }
            out += chunk
        }
        return out
    }

    /// Writes all of `bytes`. A write that misses its deadline closes the connection (libuv cannot cancel it).
    public func write(_ bytes: [UInt8], timeout: Duration) async throws {
        let core = self.core
        try await loop.await(timeout: timeout) { (completion: Completion<Void>) in
            guard !core.isClosed else { return completion.fail(UVError.badHandle) }
            let request = WriteRequest(bytes: bytes, completion: completion)
            completion.abort = { _ in core.close() }
            let rc = request.submit(on: core.tcp)
            if rc < 0 { completion.fail(UVError(rc)) }
        }
    }

    /// Closes the connection and waits for libuv to release it. `reset` aborts with RST instead of a FIN.
    public func close(reset: Bool = false) async {
        core.close(reset: reset)
        await withCheckedContinuation { core.waitClosed($0) }
    }
}

/// The buffer and request of one uv_write, kept alive until libuv calls back.
private final class WriteRequest {
    let request = uvAllocate(uv_write_t.self)
    let storage: UnsafeMutableBufferPointer<UInt8>
    let completion: Completion<Void>

    init(bytes: [UInt8], completion: Completion<Void>) {
        storage = .allocate(capacity: max(1, bytes.count))
        _ = storage.initialize(from: bytes)
        self.completion = completion
        self.count = bytes.count
    }
    let count: Int

    deinit {
        storage.deallocate()
        uvFree(request)
    }

    func submit(on tcp: UnsafeMutablePointer<uv_tcp_t>) -> Int32 {
        request.pointee.data = Unmanaged.passRetained(self).toOpaque()
        var buf = uv_buf_init(UnsafeMutableRawPointer(storage.baseAddress!).assumingMemoryBound(to: CChar.self), UInt32(count))
        let rc = uv_write(request, uvStream(tcp), &buf, 1) { req, status in
            let me = Unmanaged<WriteRequest>.fromOpaque(req!.pointee.data).takeRetainedValue()
            if status < 0 { me.completion.fail(UVError(status)) } else { me.completion.succeed(()) }
        }
        if rc < 0 { Unmanaged.passUnretained(self).release() }
        return rc
    }
}

/// A listening TCP socket on one loop.
public actor TCPListener: LoopActor {
    public nonisolated let loop: EventLoop
    nonisolated let core: TCPCore

    init(core: TCPCore) {
        self.loop = core.loop
        self.core = core
    }

    deinit { core.closeFromAnywhere() }

    /// Binds `address` (port 0 picks a free port) and listens. Throws `UVError.addressInUse` when another socket
    /// holds the port, `UVError.accessDenied` for a privileged port without the privilege.
    public static func listen(on address: SocketAddress, loop: EventLoop, backlog: Int32 = 511) async throws -> TCPListener {
        try await LoopBound(loop).listen(on: address, backlog: backlog)
    }

    public var localAddress: SocketAddress? { core.address(peer: false) }

    /// Waits for the next connection.
    public func accept(timeout: Duration) async throws -> TCPConnection {
        let core = self.core
        if core.backlog == 0 {
            try await loop.await(timeout: timeout) { (completion: Completion<Void>) in
                core.acceptor = completion
                completion.abort = { _ in core.acceptor = nil }
            }
        }
        core.backlog -= 1
        let client = try TCPCore(loop: loop)
        let rc = uv_accept(uvStream(core.tcp), uvStream(client.tcp))
        if rc < 0 {
            client.close()
            throw UVError(rc)
        }
        return TCPConnection(core: client)
    }

    public func close() async {
        core.close()
        await withCheckedContinuation { core.waitClosed($0) }
    }
}

extension LoopBound {
    func connect(to address: SocketAddress, timeout: Duration, reuseAddress: Bool) async throws -> TCPConnection {
        let core = try TCPCore(loop: loop, family: address.ip.family)
        if reuseAddress { core.setOption(SOL_SOCKET, SO_REUSEADDR, 1) }
        let request = uvAllocate(uv_connect_t.self)
        do {
            try await loop.await(timeout: timeout) { (completion: Completion<Void>) in
                request.pointee.data = Unmanaged.passRetained(completion).toOpaque()
                // Closing the handle is the only way to abandon a connect: libuv then calls back with ECANCELED.
                completion.abort = { _ in core.close() }
                let rc = address.withSockAddr { sa in
                    uv_tcp_connect(request, core.tcp, sa) { req, status in
                        let completion = Unmanaged<Completion<Void>>.fromOpaque(req!.pointee.data).takeRetainedValue()
                        uvFree(req!)
                        if status < 0 { completion.fail(UVError(status)) } else { completion.succeed(()) }
                    }
                }
                if rc < 0 {
                    Unmanaged<Completion<Void>>.fromOpaque(request.pointee.data).release()
                    uvFree(request)
                    completion.fail(UVError(rc))
                }
            }
        } catch {
            core.close()
            throw error
        }
        return TCPConnection(core: core)
    }

    func listen(on address: SocketAddress, backlog: Int32) async throws -> TCPListener {
        let core = try TCPCore(loop: loop)
        let listener = TCPListener(core: core)
        _ = try address.withSockAddr { sa throws(UVError) in try UVError.check(uv_tcp_bind(core.tcp, sa, 0)) }
        // libuv defers EADDRINUSE from bind to listen on Linux.
        try UVError.check(uv_listen(uvStream(core.tcp), backlog) { server, status in
            let core = TCPCore.from(server)
            if status < 0 {
                core.acceptor?.fail(UVError(status))
                return
            }
            core.backlog += 1
            if let acceptor = core.acceptor {
                core.acceptor = nil
                acceptor.succeed(())
            }
        })
        return listener
    }
}
