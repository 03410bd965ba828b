import CLibUV

/// The loop-confined state of one `uv_udp_t`, retained by the handle until its close callback.
final class UDPCore: @unchecked Sendable {
    let loop: EventLoop
    let udp = uvAllocate(uv_udp_t.self)
    var receiver: Completion<[UInt8]>?
    private(set) var isClosed = false
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []
    /// The close callback has run (the handle's memory is gone: never look at it again).
    private var closeCompleted = false

    init(loop: EventLoop) {
        loop.preconditionInEventLoop()
        self.loop = loop
        uv_udp_init(loop.uv, udp)
        udp.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    static func from(_ handle: UnsafeMutablePointer<uv_udp_t>?) -> UDPCore {
        Unmanaged<UDPCore>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
    }

    func startReceiving(_ completion: Completion<[UInt8]>) {
        guard !isClosed else { return completion.fail(UVError.badHandle) }
        receiver = completion
        completion.abort = { [self] _ in
            receiver = nil
            if !isClosed { uv_udp_recv_stop(udp) }
        }
        let rc = uv_udp_recv_start(udp, { handle, _, buf in
            let core = UDPCore.from(UnsafeMutableRawPointer(handle!).assumingMemoryBound(to: uv_udp_t.self))
            let raw = core.loop.readBuffer
            buf!.pointee = uv_buf_init(raw.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(raw.count))
        }, { handle, nread, _, addr, _ in
            let core = UDPCore.from(handle)
            guard nread != 0 || addr != nil, let receiver = core.receiver else { return }
            core.receiver = nil
            uv_udp_recv_stop(handle)
            if nread < 0 { receiver.fail(UVError(Int32(nread))) } else { receiver.succeed(Array(UnsafeRawBufferPointer(rebasing: core.loop.readBuffer[0..<nread]))) }
        })
        if rc < 0 { completion.fail(UVError(rc)) }
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        uv_close(uvHandle(udp)) { handle in
            let udp = UnsafeMutableRawPointer(handle!).assumingMemoryBound(to: uv_udp_t.self)
            let core = Unmanaged<UDPCore>.fromOpaque(udp.pointee.data).takeRetainedValue()
            core.closeCompleted = true
            core.receiver?.fail(UVError.cancelled)
            for waiter in core.closeWaiters { waiter.resume() }
            core.closeWaiters = []
            uvFree(udp)
        }
    }

    func waitClosed(_ continuation: CheckedContinuation<Void, Never>) {
        if closeCompleted { return continuation.resume() }
        closeWaiters.append(continuation)
    }
}

/// A UDP socket connected to one peer, on one loop: send, and receive with a deadline. An ICMP port-unreachable
/// from the peer surfaces as `ECONNREFUSED` on receive.
public actor UDPConnection: LoopActor {
    public nonisolated let loop: EventLoop
    nonisolated let core: UDPCore

    init(core: UDPCore) {
        self.loop = core.loop
        self.core = core
    }

    deinit {
        let core = self.core
        if core.loop.inEventLoop { core.close() } else { core.loop.execute { core.close() } }
    }

    /// A new socket on `loop`, connected to `peer`.
    public static func connect(to peer: SocketAddress, on loop: EventLoop) async throws -> UDPConnection {
        try await LoopBound(loop).udpConnect(to: peer)
    }

    /// Sends one datagram (now, or throws when the socket buffer is full).
    public func send(_ bytes: [UInt8]) throws {
        var bytes = bytes
        let rc = bytes.withUnsafeMutableBytes { raw -> Int32 in
            var buf = uv_buf_init(raw.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(raw.count))
            return uv_udp_try_send(core.udp, &buf, 1, nil)
        }
        if rc < 0 { throw UVError(rc) }
    }

    /// Waits for the next datagram.
    public func receive(timeout: Duration) async throws -> [UInt8] {
        try await loop.await(timeout: timeout) { core.startReceiving($0) }
    }

    public func close() async {
        core.close()
        await withCheckedContinuation { core.waitClosed($0) }
    }
}

extension LoopBound {
    func udpConnect(to peer: SocketAddress) throws -> UDPConnection {
        let core = UDPCore(loop: loop)
        let rc = peer.withSockAddr { uv_udp_connect(core.udp, $0) }
        if rc < 0 {
            core.close()
            throw UVError(rc)
        }
        return UDPConnection(core: core)
    }
}
