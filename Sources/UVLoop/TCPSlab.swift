import CLibUV

/// What a `TCPSlab` tells its owner, for a slot. Every call comes on the slab's loop thread, from a libuv
/// callback.
public protocol TCPSlabDelegate: AnyObject {
    /// A listening slot has a connection to accept (`error` nil), or accepting failed.
    func incomingConnection(_ slab: TCPSlab, _ slot: Int32, error: UVError?)
    /// A connect finished (`error` nil: connected). After a close, ECANCELED.
    func connected(_ slab: TCPSlab, _ slot: Int32, error: UVError?)
    /// Bytes arrived on a reading slot.
    func received(_ slab: TCPSlab, _ slot: Int32, _ bytes: ReceivedBytes)
    /// Reading ended: `error` nil for the peer's end of stream.
    func readEnded(_ slab: TCPSlab, _ slot: Int32, error: UVError?)
    /// The slot's handle is closed; the slot can be opened again.
    func closed(_ slab: TCPSlab, _ slot: Int32)
}

/// A fixed array of TCP handles of one loop, addressed by slot number: the callback kit's face for a hot path
/// that opens and closes sockets by the thousand (the sweep's listeners, clients and accepted servers). No
/// allocation per socket; a callback finds its slot from the handle's place in the array. Each slot has room
/// for one connect and one write in flight.
///
/// Handle rules: a slot is opened, used, and closed only with `close`; the slot is free again when the
/// delegate hears `closed`. The owner keeps the slab until every slot it opened is closed. Loop thread only.
public final class TCPSlab {
    public let capacity: Int
    /// Told of every event; set it to nil before the delegate goes while slots are still closing.
    public unowned(unsafe) var delegate: (any TCPSlabDelegate)?
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let handles: UnsafeMutablePointer<uv_tcp_t>
    private let connects: UnsafeMutablePointer<uv_connect_t>?
    private let writes: UnsafeMutablePointer<uv_write_t>?
    private let readBuffer: UnsafeMutableRawPointer
    private static let readBufferSize = 4096
    /// Slots opened and not yet closed (a slab freed with slots open would free memory libuv still uses).
    public private(set) var openSlots = 0

    /// `connects` / `writes`: whether slots connect out or write (room for one request each per slot).
    public init(on loop: EventLoop, capacity: Int, connects: Bool = false, writes: Bool = false) {
        loop.preconditionInEventLoop()
        self.loop = loop.uv
        self.capacity = capacity
        handles = TCPSlab.zeroed(capacity)
        self.connects = connects ? TCPSlab.zeroed(capacity) : nil
        self.writes = writes ? TCPSlab.zeroed(capacity) : nil
        readBuffer = .allocate(byteCount: TCPSlab.readBufferSize, alignment: 16)
    }

    deinit {
        precondition(openSlots == 0, "a TCPSlab freed with \(openSlots) slots open")
        handles.deallocate()
        connects?.deallocate()
        writes?.deallocate()
        readBuffer.deallocate()
    }

    static func zeroed<T>(_ count: Int) -> UnsafeMutablePointer<T> {
        let p = UnsafeMutablePointer<T>.allocate(capacity: count)
        UnsafeMutableRawPointer(p).initializeMemory(as: UInt8.self, repeating: 0, count: count * MemoryLayout<T>.stride)
        return p
    }

    @inline(__always)
    private static func slab(_ data: UnsafeMutableRawPointer?) -> TCPSlab {
        Unmanaged<TCPSlab>.fromOpaque(data!).takeUnretainedValue()
    }

    @inline(__always)
    private static func index<T, U>(_ p: UnsafeMutablePointer<T>, in base: UnsafeMutablePointer<U>) -> Int32 {
        Int32((UnsafeRawPointer(p) - UnsafeRawPointer(base)) / MemoryLayout<U>.stride)
    }

    private var me: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    @inline(__always)
    private func handle(_ slot: Int32) -> UnsafeMutablePointer<uv_tcp_t> { handles + Int(slot) }

    @inline(__always)
    private func stream(_ slot: Int32) -> UnsafeMutablePointer<uv_stream_t> { uvStream(handle(slot)) }

    @inline(__always)
    private static func error(_ rc: Int32) -> UVError? { rc < 0 ? UVError(rc) : nil }

    // MARK: opening

    /// Opens the slot's handle; its socket is created when it binds or connects. Fails only on memory.
    public func open(_ slot: Int32) -> UVError? {
        let rc = uv_tcp_init(loop, handle(slot))
        if rc < 0 { return UVError(rc) }
        opened(slot)
        return nil
    }

    /// Opens the slot's handle with its socket created now, so that options can be set before it connects.
    /// Fails with EMFILE and the like; nothing is open then.
    public func open(_ slot: Int32, family: IPAddress.Family) -> UVError? {
        let rc = uv_tcp_init_ex(loop, handle(slot), UInt32(family == .v4 ? AF_INET : AF_INET6))
        if rc < 0 { return UVError(rc) }
        opened(slot)
        return nil
    }

    private func opened(_ slot: Int32) {
        handle(slot).pointee.data = me
        // The slab keeps itself alive while libuv holds any of its handles: memory is freed only after the
        // last close callback, whenever its owner lets go.
        if openSlots == 0 { _ = Unmanaged.passUnretained(self).retain() }
        openSlots += 1
    }

    public func set(_ option: SocketOption, _ value: Int32, on slot: Int32) {
        var fd: uv_os_fd_t = -1
        if uv_fileno(uvHandle(handle(slot)), &fd) == 0 { option.set(on: fd, value) }
    }

    /// Binds to `address:port`. On Linux libuv reports EADDRINUSE from `listen`, not here.
    public func bind(_ slot: Int32, to address: PortAddress, port: UInt16) -> UVError? {
        TCPSlab.error(address.with(port: port) { uv_tcp_bind(handle(slot), $0, 0) })
    }

    public func listen(_ slot: Int32, backlog: Int32) -> UVError? {
        TCPSlab.error(uv_listen(stream(slot), backlog, TCPSlab.onConnection))
    }

    /// Takes the connection waiting on `listener`'s slot `listening` (after `incomingConnection`) into `slot`,
    /// opened (`open(_:)`) beforehand.
    public func accept(_ slot: Int32, from listener: TCPSlab, _ listening: Int32) -> UVError? {
        TCPSlab.error(uv_accept(listener.stream(listening), stream(slot)))
    }

    /// Connects to `address:port`; the delegate hears `connected`.
    public func connect(_ slot: Int32, to address: PortAddress, port: UInt16) -> UVError? {
        guard let connects else { preconditionFailure("a TCPSlab made without connects") }
        return TCPSlab.error(address.with(port: port) { uv_tcp_connect(connects + Int(slot), handle(slot), $0, TCPSlab.onConnect) })
    }

    /// The slot's local port (0 when it has none yet); nil when the socket cannot say.
    public func localPort(_ slot: Int32) -> UInt16? {
        SocketAddress.reading { uv_tcp_getsockname(handle(slot), $0, $1) }?.port
    }

    // MARK: data

    /// Queues `text` on the slot; one write in flight per slot, its completion not reported (a failure shows
    /// in the reads that follow).
    public func write(_ text: WireText, on slot: Int32) -> UVError? {
        guard let writes else { preconditionFailure("a TCPSlab made without writes") }
        var buf = text.buffer
        return TCPSlab.error(uv_write(writes + Int(slot), stream(slot), &buf, 1, nil))
    }

    public func startReading(_ slot: Int32) -> UVError? {
        TCPSlab.error(uv_read_start(stream(slot), TCPSlab.allocate, TCPSlab.onRead))
    }

    /// Closes the slot; the delegate hears `closed`. `reset`: end a connected socket with an RST (faster than
    /// a FIN, and no TIME_WAIT left behind), falling back to a normal close when that cannot be done.
    public func close(_ slot: Int32, reset: Bool = false) {
        // Already closing only when the loop's shutdown closed what was left open: the slab is abandoned with it.
        guard uv_is_closing(uvHandle(handle(slot))) == 0 else { return }
        if !reset || uv_tcp_close_reset(handle(slot), TCPSlab.onClose) != 0 {
            uv_close(uvHandle(handle(slot)), TCPSlab.onClose)
        }
    }

    // MARK: callbacks

    private static let onClose: uv_close_cb = { handle in
        let slab = TCPSlab.slab(handle!.pointee.data)
        slab.openSlots -= 1
        // Decided before the delegate hears it: a delegate that opens a slot again retains the slab anew.
        let last = slab.openSlots == 0
        slab.delegate?.closed(slab, index(handle!, in: slab.handles))
        if last { Unmanaged.passUnretained(slab).release() }
    }

    private static let allocate: uv_alloc_cb = { handle, _, buf in
        let slab = TCPSlab.slab(handle!.pointee.data)
        buf!.pointee = uv_buf_init(slab.readBuffer.assumingMemoryBound(to: CChar.self), UInt32(readBufferSize))
    }

    private static let onConnection: uv_connection_cb = { server, status in
        let slab = TCPSlab.slab(server!.pointee.data)
        slab.delegate?.incomingConnection(slab, index(server!, in: slab.handles), error: error(status))
    }

    private static let onConnect: uv_connect_cb = { request, status in
        let slab = TCPSlab.slab(request!.pointee.handle.pointee.data)
        slab.delegate?.connected(slab, index(request!, in: slab.connects!), error: error(status))
    }

    private static let onRead: uv_read_cb = { stream, nread, _ in
        let slab = TCPSlab.slab(stream!.pointee.data)
        let slot = index(stream!, in: slab.handles)
        if nread > 0 {
            slab.delegate?.received(slab, slot, ReceivedBytes(base: slab.readBuffer, count: nread))
        } else if nread < 0 {
            slab.delegate?.readEnded(slab, slot, error: nread == Int(UV_EOF.rawValue) ? nil : UVError(Int32(nread)))
        }
    }
}
