import CLibUV

/// What a `TCPListenSocket` tells its owner, on the loop thread.
public protocol TCPListenSocketDelegate: AnyObject {
    /// A connection was accepted: a stream not yet reading, with its addresses read. The owner sets its
    /// delegate and starts reading, or closes it.
    func accepted(_ stream: ByteStream, on listener: TCPListenSocket)
    /// accept failed (EMFILE and the like). libuv has already accepted and closed what was pending with its
    /// reserve descriptor, so the listener neither spins nor stops.
    func acceptFailed(_ error: UVError, on listener: TCPListenSocket)
}

/// A listening TCP socket of the callback kit. Loop thread only. The handle keeps the listener alive until
/// `close()` has run its course (libuv's rule: a handle is released only in its close callback).
public final class TCPListenSocket {
    public let loop: EventLoop
    /// Held strongly until the handle has closed (then let go): every handle is closed, so no cycle outlives it.
    public var delegate: (any TCPListenSocketDelegate)?
    /// The port it is bound to.
    public private(set) var port: UInt16
    /// A number the owner may use to find its own state for this listener.
    public var tag = 0
    private let tcp: UnsafeMutablePointer<uv_tcp_t>
    private var isClosing = false
    private var onClosed: (() -> Void)?

    /// Binds and listens. Throws `addressInUse`, `accessDenied` (a privileged port), EADDRNOTAVAIL (not an
    /// address of this machine). libuv sets SO_REUSEADDR, so a TIME-WAIT left by a client that set it too is
    /// no obstacle; one left by a client that did not is (the kernel's rule), and shows as `addressInUse`.
    public init(_ address: SocketAddress, on loop: EventLoop, backlog: Int32 = 511) throws(UVError) {
        loop.preconditionInEventLoop()
        self.loop = loop
        port = address.port
        tcp = uvAllocate(uv_tcp_t.self)
        var rc = uv_tcp_init(loop.uv, tcp)
        if rc < 0 {
            uvFree(tcp)
            throw UVError(rc)
        }
        tcp.pointee.data = Unmanaged.passRetained(self).toOpaque()  // released in the close callback
        rc = address.withSockAddr { uv_tcp_bind(tcp, $0, 0) }
        // libuv defers EADDRINUSE from bind to listen on Linux.
        if rc == 0 { rc = uv_listen(stream, backlog, TCPListenSocket.onConnection) }
        if rc < 0 {
            close()
            throw UVError(rc)
        }
        if address.port == 0 { port = SocketAddress.reading { uv_tcp_getsockname(tcp, $0, $1) }?.port ?? 0 }
    }

    private var stream: UnsafeMutablePointer<uv_stream_t> {
        UnsafeMutableRawPointer(tcp).assumingMemoryBound(to: uv_stream_t.self)
    }

    private static let onConnection: uv_connection_cb = { server, status in
        let listener = Unmanaged<TCPListenSocket>.fromOpaque(server!.pointee.data).takeUnretainedValue()
        guard !listener.isClosing else { return }
        if status < 0 {
            listener.delegate?.acceptFailed(UVError(status), on: listener)
            return
        }
        listener.accept()
    }

    private func accept() {
        let client: ByteStream
        do {
            client = try ByteStream(tcpOn: loop)
        } catch {
            delegate?.acceptFailed(error, on: self)
            return
        }
        let rc = uv_accept(stream, client.stream)
        if rc < 0 {
            client.close()
            delegate?.acceptFailed(UVError(rc), on: self)
            return
        }
        client.readAddresses()
        delegate?.accepted(client, on: self)
    }

    /// Stops listening; `then` runs on the loop once the handle is released. Idempotent.
    public func close(then: (() -> Void)? = nil) {
        guard !isClosing else { return }
        isClosing = true
        onClosed = then
        uv_close(UnsafeMutableRawPointer(tcp).assumingMemoryBound(to: uv_handle_t.self)) { handle in
            let listener = Unmanaged<TCPListenSocket>.fromOpaque(handle!.pointee.data).takeRetainedValue()
            UnsafeMutableRawPointer(handle!).deallocate()
            listener.delegate = nil
            let then = listener.onClosed
            listener.onClosed = nil
            then?()
        }
    }
}
