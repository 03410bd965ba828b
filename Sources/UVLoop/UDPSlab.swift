import CLibUV

/// What a `UDPSlab` tells its owner, for a slot. Every call comes on the slab's loop thread.
public protocol UDPSlabDelegate: AnyObject {
    /// A datagram arrived on a receiving slot; `peer` is valid only during the call.
    func received(_ slab: UDPSlab, _ slot: Int32, _ bytes: ReceivedBytes, from peer: DatagramPeer)
    /// Receiving reported an error (with an error queue, one is waiting there: `readErrorQueue`).
    func receiveFailed(_ slab: UDPSlab, _ slot: Int32, error: UVError)
    /// The slot's handle is closed; the slot can be opened again.
    func closed(_ slab: UDPSlab, _ slot: Int32)
}

/// A fixed array of UDP handles of one loop, addressed by slot number: the callback kit's face for the sweep's
/// datagram sockets (a server per port, one shared client). Same rules as `TCPSlab`: open, use, `close`; the
/// slot is free at `closed`; the owner keeps the slab until every slot it opened is closed. Loop thread only.
public final class UDPSlab {
    public let capacity: Int
    /// Told of every event; set it to nil before the delegate goes while slots are still closing.
    public unowned(unsafe) var delegate: (any UDPSlabDelegate)?
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let handles: UnsafeMutablePointer<uv_udp_t>
    private let receiveBuffer: UnsafeMutableRawPointer
    private let receiveBufferSize: Int
    private let batched: Bool
    public private(set) var openSlots = 0

    /// `batchedReceive`: read up to 64 datagrams per system call (recvmmsg), for a socket that many peers
    /// answer at once; it takes a receive buffer of 64 datagrams of 64 KiB.
    public init(on loop: EventLoop, capacity: Int, batchedReceive: Bool = false) {
        loop.preconditionInEventLoop()
        self.loop = loop.uv
        self.capacity = capacity
        batched = batchedReceive
        handles = TCPSlab.zeroed(capacity)
        receiveBufferSize = batchedReceive ? 64 * 65536 : 65536
        receiveBuffer = .allocate(byteCount: receiveBufferSize, alignment: 16)
    }

    deinit {
        precondition(openSlots == 0, "a UDPSlab freed with \(openSlots) slots open")
        handles.deallocate()
        receiveBuffer.deallocate()
    }

    @inline(__always)
    private static func slab(_ data: UnsafeMutableRawPointer?) -> UDPSlab {
        Unmanaged<UDPSlab>.fromOpaque(data!).takeUnretainedValue()
    }

    @inline(__always)
    private func handle(_ slot: Int32) -> UnsafeMutablePointer<uv_udp_t> { handles + Int(slot) }

    @inline(__always)
    private func slot(of handle: UnsafeMutablePointer<uv_udp_t>) -> Int32 {
        Int32((UnsafeRawPointer(handle) - UnsafeRawPointer(handles)) / MemoryLayout<uv_udp_t>.stride)
    }

    @inline(__always)
    private static func error(_ rc: Int32) -> UVError? { rc < 0 ? UVError(rc) : nil }

    // MARK: opening

    /// Opens the slot's handle; its socket is created at `bind` (or now, given a `family`: options can then be
    /// set first).
    public func open(_ slot: Int32, family: IPAddress.Family? = nil) -> UVError? {
        var flags: UInt32 = batched ? UInt32(UV_UDP_RECVMMSG.rawValue) : 0
        if let family { flags |= UInt32(family == .v4 ? AF_INET : AF_INET6) }
        let rc = uv_udp_init_ex(loop, handle(slot), flags)
        if rc < 0 { return UVError(rc) }
        handle(slot).pointee.data = Unmanaged.passUnretained(self).toOpaque()
        // Alive while libuv holds any of its handles (see TCPSlab).
        if openSlots == 0 { _ = Unmanaged.passUnretained(self).retain() }
        openSlots += 1
        return nil
    }

    /// Binds without SO_REUSEADDR: with it, a port another process holds with SO_REUSEADDR would bind and
    /// look free.
    public func bind(_ slot: Int32, to address: PortAddress, port: UInt16) -> UVError? {
        UDPSlab.error(address.with(port: port) { uv_udp_bind(handle(slot), $0, 0) })
    }

    public func set(_ option: SocketOption, _ value: Int32, on slot: Int32) {
        if let fd = descriptor(slot) { option.set(on: fd, value) }
    }

    /// ICMP errors for what the slot sends go to its error queue, each with the datagram's destination
    /// (IP_RECVERR / IPV6_RECVERR): `readErrorQueue` tells them apart by port.
    public func receiveErrors(on slot: Int32, family: IPAddress.Family) {
        guard let fd = descriptor(slot) else { return }
        var one: Int32 = 1
        let size = socklen_t(MemoryLayout<Int32>.size)
        if family == .v4 {
            setsockopt(fd, Int32(IPPROTO_IP), IP_RECVERR, &one, size)
        } else {
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_RECVERR, &one, size)
        }
    }

    private func descriptor(_ slot: Int32) -> Int32? {
        var fd: uv_os_fd_t = -1
        return uv_fileno(uvHandle(handle(slot)), &fd) == 0 ? fd : nil
    }

    public func startReceiving(_ slot: Int32) -> UVError? {
        UDPSlab.error(uv_udp_recv_start(handle(slot), UDPSlab.allocate, UDPSlab.onReceive))
    }

    // MARK: sending

    /// Sends `text` now, or fails (a full send buffer is EAGAIN: nothing queued).
    public func trySend(_ text: WireText, on slot: Int32, to address: PortAddress, port: UInt16) -> UVError? {
        var buf = text.buffer
        return UDPSlab.error(address.with(port: port) { uv_udp_try_send(handle(slot), &buf, 1, $0) })
    }

    /// Sends `text` back to where a datagram came from, during its `received` call.
    public func trySend(_ text: WireText, on slot: Int32, to peer: DatagramPeer) -> UVError? {
        var buf = text.buffer
        return UDPSlab.error(uv_udp_try_send(handle(slot), &buf, 1, peer.address))
    }

    /// Reads the slot's error queue to the end: for each ICMP error, the port the failed datagram was sent to
    /// and the error (`ee_errno` of the `sock_extended_err` record).
    public func readErrorQueue(_ slot: Int32, _ body: (_ port: UInt16, _ errno: Int32) -> Void) {
        guard let fd = descriptor(slot) else { return }
        var name = sockaddr_storage()
        var control = [UInt8](repeating: 0, count: 512)
        var payload = [UInt8](repeating: 0, count: 64)
        while true {
            let (n, length) = payload.withUnsafeMutableBytes { payloadBytes in
                control.withUnsafeMutableBytes { controlBytes in
                    ControlMessages.receive(fd, payload: payloadBytes, control: controlBytes, name: &name,
                                            flags: Int32(MSG_ERRQUEUE) | Int32(MSG_DONTWAIT))
                }
            }
            if n < 0 { return }
            var errno: Int32?
            control.withUnsafeBytes { raw in
                ControlMessages.forEach(in: raw, length: length) { level, type, data in
                    guard (level == Int32(IPPROTO_IP) && type == IP_RECVERR)
                        || (level == Int32(IPPROTO_IPV6) && type == IPV6_RECVERR), data.count >= 4 else { return true }
                    errno = Int32(bitPattern: data.load(as: UInt32.self))
                    return false
                }
            }
            guard let errno else { continue }
            let port = withUnsafePointer(to: &name) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress.port(of: $0) } }
            body(port, errno)
        }
    }

    /// Closes the slot; the delegate hears `closed`.
    public func close(_ slot: Int32) {
        // Already closing only when the loop's shutdown closed what was left open: the slab is abandoned with it.
        guard uv_is_closing(uvHandle(handle(slot))) == 0 else { return }
        uv_close(uvHandle(handle(slot)), UDPSlab.onClose)
    }

    // MARK: callbacks

    private static let onClose: uv_close_cb = { handle in
        let slab = UDPSlab.slab(handle!.pointee.data)
        slab.openSlots -= 1
        // Decided before the delegate hears it: a delegate that opens a slot again retains the slab anew.
        let last = slab.openSlots == 0
        slab.delegate?.closed(slab, slab.slot(of: UnsafeMutableRawPointer(handle!).assumingMemoryBound(to: uv_udp_t.self)))
        if last { Unmanaged.passUnretained(slab).release() }
    }

    private static let allocate: uv_alloc_cb = { handle, _, buf in
        let slab = UDPSlab.slab(handle!.pointee.data)
        buf!.pointee = uv_buf_init(slab.receiveBuffer.assumingMemoryBound(to: CChar.self), UInt32(slab.receiveBufferSize))
    }

    private static let onReceive: uv_udp_recv_cb = { handle, nread, buf, addr, _ in
        let slab = UDPSlab.slab(handle!.pointee.data)
        if nread < 0 { return slab.delegate?.receiveFailed(slab, slab.slot(of: handle!), error: UVError(Int32(nread))) ?? () }
        guard nread > 0, let addr else { return }
        slab.delegate?.received(slab, slab.slot(of: handle!), ReceivedBytes(base: UnsafeRawPointer(buf!.pointee.base!), count: nread),
                                from: DatagramPeer(address: addr))
    }
}
