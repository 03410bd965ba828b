import CLibUV
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The Incoming Port Tester's TCP test, as a callback state machine per slot: listen on BIND:P, connect to
/// TARGET:P, the client sends `client -> server\n`, the server checks it and replies `server -> client\n`, the
/// client checks that. Handles and requests live in arrays indexed by slot; a callback finds its slot from the
/// handle's address, and the probe from the handle's `data`.
final class TCPProbe: PortProbe {
    enum Phase: UInt8 {
        case idle
        /// Listener up, client connecting. Deadline miss: FAIL.
        case connecting
        /// Connected; the client's line is on its way to the server. Deadline miss: SEND.
        case sending
        /// The server has the line; its reply is on its way. Deadline miss: RECV.
        case replying
        /// Verdict given; handles closing.
        case done
    }

    struct Slot {
        var phase = Phase.idle
        var port: UInt16 = 0
        var open: UInt8 = 0
        var closing: UInt8 = 0
        var serverMatched: UInt8 = 0
        var clientMatched: UInt8 = 0
        var accepted = false
        var connected = false
    }

    static let listenerBit: UInt8 = 1, clientBit: UInt8 = 2, serverBit: UInt8 = 4

    static let request = ProtocolLine("client -> server\n")
    static let reply = ProtocolLine("server -> client\n")

    let transport = Transport.tcp
    unowned(unsafe) let scheduler: ShardScheduler
    private let uvLoop: UnsafeMutablePointer<uv_loop_t>
    private let capacity: Int
    private var slots: UnsafeMutablePointer<Slot>
    private let listeners: UnsafeMutablePointer<uv_tcp_t>
    private let clients: UnsafeMutablePointer<uv_tcp_t>
    private let servers: UnsafeMutablePointer<uv_tcp_t>
    private let connects: UnsafeMutablePointer<uv_connect_t>
    private let clientWrites: UnsafeMutablePointer<uv_write_t>
    private let serverWrites: UnsafeMutablePointer<uv_write_t>
    private let readBuffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 16)
    /// Ports tested again because the sweep itself spoiled the test (its own client port, or a descriptor
    /// shortage), with their attempts.
    private var retests: [UInt16: Int] = [:]
    private var bindAddress: sockaddr_storage
    private var targetAddress: sockaddr_storage
    private let family: UInt32

    /// Every port of the sweep (all shards): a client port among them can clash with another port's test.
    private let swept: PortSet

    init(scheduler: ShardScheduler, capacity: Int, bind: IPAddress, target: IPAddress, swept: PortSet) {
        self.scheduler = scheduler
        self.swept = swept
        self.uvLoop = scheduler.loop.uv
        self.capacity = capacity
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: Slot(), count: capacity)
        listeners = TCPProbe.zeroed(capacity)
        clients = TCPProbe.zeroed(capacity)
        servers = TCPProbe.zeroed(capacity)
        connects = TCPProbe.zeroed(capacity)
        clientWrites = TCPProbe.zeroed(capacity)
        serverWrites = TCPProbe.zeroed(capacity)
        bindAddress = SocketAddress(bind, port: 0).storage
        targetAddress = SocketAddress(target, port: 0).storage
        family = UInt32(target.family == .v4 ? AF_INET : AF_INET6)
    }

    deinit {
        slots.deallocate()
        listeners.deallocate()
        clients.deallocate()
        servers.deallocate()
        connects.deallocate()
        clientWrites.deallocate()
        serverWrites.deallocate()
        readBuffer.deallocate()
    }

    private static func zeroed<T>(_ count: Int) -> UnsafeMutablePointer<T> {
        let p = UnsafeMutablePointer<T>.allocate(capacity: count)
        UnsafeMutableRawPointer(p).initializeMemory(as: UInt8.self, repeating: 0, count: count * MemoryLayout<T>.stride)
        return p
    }

    @inline(__always)
    private static func probe(_ data: UnsafeMutableRawPointer?) -> TCPProbe {
        Unmanaged<TCPProbe>.fromOpaque(data!).takeUnretainedValue()
    }

    @inline(__always)
    private static func index<T, U>(_ p: UnsafeMutablePointer<T>, in base: UnsafeMutablePointer<U>) -> Int32 {
        Int32((UnsafeRawPointer(p) - UnsafeRawPointer(base)) / MemoryLayout<U>.stride)
    }

    private var me: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    // MARK: PortProbe

    func start(_ slot: Int32, port: UInt16) {
        let s = Int(slot)
        slots[s] = Slot(phase: .connecting, port: port)

        let listener = listeners + s
        uv_tcp_init(uvLoop, listener)
        listener.pointee.data = me
        slots[s].open |= TCPProbe.listenerBit
        bindAddress.setPort(port)
        var rc = withUnsafePointer(to: &bindAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_bind(listener, $0, 0) }
        }
        // On Linux libuv defers EADDRINUSE from bind to listen.
        if rc == 0 { rc = uv_listen(uvStream(listener), 1, TCPProbe.onConnection) }
        if rc < 0 { return setupFailed(slot, rc) }

        let client = clients + s
        rc = uv_tcp_init_ex(uvLoop, client, family)
        if rc < 0 { return setupFailed(slot, rc) }
        client.pointee.data = me
        slots[s].open |= TCPProbe.clientBit
        // SO_REUSEADDR before connect: the client's local port, later in TIME_WAIT, must never block a listener
        // of this sweep on that port.
        var fd: uv_os_fd_t = -1
        var one: Int32 = 1
        if uv_fileno(uvHandle(client), &fd) == 0 {
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        scheduler.beginStep(slot)
        targetAddress.setPort(port)
        rc = withUnsafePointer(to: &targetAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_connect(connects + s, client, $0, TCPProbe.onConnect) }
        }
        if rc < 0 { connectFailed(slot, rc) }
    }

    func expire(_ slot: Int32) {
        switch slots[Int(slot)].phase {
        case .connecting: finish(slot, .fail, errno: ETIMEDOUT)
        case .sending: finish(slot, .send, errno: ETIMEDOUT)
        case .replying: finish(slot, .recv, errno: ETIMEDOUT)
        case .idle, .done: break
        }
    }

    func abandon(_ slot: Int32) {
        guard slots[Int(slot)].phase != .done else { return }
        slots[Int(slot)].phase = .done
        closeAll(slot)
    }

    // MARK: verdicts

    /// `suspect`: the verdict may come from this machine rather than the path (see `clientRead`).
    private func finish(_ slot: Int32, _ outcome: Outcome, errno: Int32 = 0, suspect: Bool = false) {
        let s = Int(slot)
        guard slots[s].phase != .done else { return }
        slots[s].phase = .done
        if !outcome.isPass && retests[slots[s].port, default: 0] < 3
            && (suspect || scheduler.overlapsShortage(slot) || spoiledBySweep(slot, errno: errno)) {
            retests[slots[s].port, default: 0] += 1
            scheduler.retry(slot)
        } else {
            scheduler.finish(slot, outcome, errno: errno)
        }
        closeAll(slot)
    }

    /// Whether the sweep's own client, not the path under test, spoiled this port's test. Through a NAT that
    /// forwards TARGET:P back here (the hairpin of a router's port forward) the client's ephemeral port Y can be
    /// a port of the sweep too: if Y's test had used P as its client port, the router's connection tracking
    /// still holds (here:P → router:Y) and takes the new (here:Y → router:P) for its reply direction, and the
    /// SYN is refused; a client whose port is P itself meets its own SYN. Such a port is tested again with a new
    /// client port. Only checked for a port that did not pass, so the common path pays no syscall.
    private func spoiledBySweep(_ slot: Int32, errno: Int32) -> Bool {
        let s = Int(slot)
        guard slots[s].open & TCPProbe.clientBit != 0 else { return false }
        guard let local = SocketAddress.reading({ uv_tcp_getsockname(clients + s, $0, $1) })?.port, local != 0 else {
            return false
        }
        return local == slots[s].port || (errno == ECONNREFUSED && swept.contains(local))
    }

    private func requeue(_ slot: Int32, errno: Int32) {
        guard slots[Int(slot)].phase != .done else { return }
        slots[Int(slot)].phase = .done
        scheduler.requeue(slot, errno: errno)
        closeAll(slot)
    }

    private static func isLocalShortage(_ rc: Int32) -> Bool {
        rc == UV_EMFILE.rawValue || rc == UV_ENFILE.rawValue || rc == UV_ENOBUFS.rawValue || rc == UV_ENOMEM.rawValue
            || rc == UV_EADDRNOTAVAIL.rawValue || rc == UV_EAGAIN.rawValue
    }

    /// The listener or the client socket could not be set up.
    private func setupFailed(_ slot: Int32, _ rc: Int32) {
        if rc == UV_EADDRINUSE.rawValue { return finish(slot, .used, errno: -rc) }
        if rc == UV_EACCES.rawValue || rc == UV_EPERM.rawValue { return finish(slot, .sudo, errno: -rc) }
        // EADDRNOTAVAIL from bind means the bind address is not ours: a configuration error checked up front.
        if TCPProbe.isLocalShortage(rc) && rc != UV_EADDRNOTAVAIL.rawValue { return requeue(slot, errno: -rc) }
        finish(slot, .erro, errno: -rc)
    }

    private func connectFailed(_ slot: Int32, _ rc: Int32) {
        switch rc {
        case UV_ECONNREFUSED.rawValue, UV_ETIMEDOUT.rawValue, UV_EHOSTUNREACH.rawValue, UV_ENETUNREACH.rawValue,
             UV_EHOSTDOWN.rawValue, UV_ENETDOWN.rawValue, UV_ECONNRESET.rawValue, UV_ECONNABORTED.rawValue:
            finish(slot, .fail, errno: -rc)
        case _ where TCPProbe.isLocalShortage(rc):
            requeue(slot, errno: -rc)
        default:
            finish(slot, .erro, errno: -rc)
        }
    }

    // MARK: handles

    private func close(_ slot: Int32, _ bit: UInt8) {
        let s = Int(slot)
        guard slots[s].open & bit != 0 else { return }
        slots[s].open &= ~bit
        slots[s].closing += 1
        switch bit {
        case TCPProbe.listenerBit:
            uv_close(uvHandle(listeners + s), TCPProbe.onListenerClosed)
        case TCPProbe.clientBit:
            // An RST close: faster than a FIN, and it leaves no TIME_WAIT behind.
            if !slots[s].connected || uv_tcp_close_reset(clients + s, TCPProbe.onClientClosed) != 0 {
                uv_close(uvHandle(clients + s), TCPProbe.onClientClosed)
            }
        default:
            uv_close(uvHandle(servers + s), TCPProbe.onServerClosed)
        }
    }

    private func closeAll(_ slot: Int32) {
        close(slot, TCPProbe.clientBit)
        close(slot, TCPProbe.serverBit)
        close(slot, TCPProbe.listenerBit)
        if slots[Int(slot)].closing == 0 { scheduler.release(slot) }
    }

    private func closed(_ slot: Int32) {
        let s = Int(slot)
        slots[s].closing -= 1
        if slots[s].closing == 0 && slots[s].open == 0 {
            slots[s].phase = .idle
            scheduler.release(slot)
        }
    }

    private static let onListenerClosed: uv_close_cb = { handle in
        let probe = TCPProbe.probe(handle!.pointee.data)
        probe.closed(index(handle!, in: probe.listeners))
    }
    private static let onClientClosed: uv_close_cb = { handle in
        let probe = TCPProbe.probe(handle!.pointee.data)
        probe.closed(index(handle!, in: probe.clients))
    }
    private static let onServerClosed: uv_close_cb = { handle in
        let probe = TCPProbe.probe(handle!.pointee.data)
        probe.closed(index(handle!, in: probe.servers))
    }

    private static let allocate: uv_alloc_cb = { handle, _, buf in
        let probe = TCPProbe.probe(handle!.pointee.data)
        buf!.pointee = uv_buf_init(probe.readBuffer.assumingMemoryBound(to: CChar.self), 4096)
    }

    // MARK: the exchange

    private static let onConnection: uv_connection_cb = { server, status in
        let probe = TCPProbe.probe(server!.pointee.data)
        probe.accepted(index(server!, in: probe.listeners), status: status)
    }

    private func accepted(_ slot: Int32, status: Int32) {
        let s = Int(slot)
        guard slots[s].phase == .connecting || slots[s].phase == .sending, !slots[s].accepted else { return }
        if status < 0 {
            return TCPProbe.isLocalShortage(status) ? requeue(slot, errno: -status) : finish(slot, .erro, errno: -status)
        }
        let server = servers + s
        uv_tcp_init(uvLoop, server)
        server.pointee.data = me
        slots[s].open |= TCPProbe.serverBit
        let rc = uv_accept(uvStream(listeners + s), uvStream(server))
        if rc < 0 { return finish(slot, .erro, errno: -rc) }
        slots[s].accepted = true
        close(slot, TCPProbe.listenerBit)  // one connection per port
        uv_read_start(uvStream(server), TCPProbe.allocate, TCPProbe.onServerRead)
    }

    private static let onConnect: uv_connect_cb = { request, status in
        let probe = TCPProbe.probe(request!.pointee.handle.pointee.data)
        probe.connected(index(request!, in: probe.connects), status: status)
    }

    private func connected(_ slot: Int32, status: Int32) {
        let s = Int(slot)
        guard slots[s].phase == .connecting else { return }  // ECANCELED after a close lands here too
        if status < 0 { return connectFailed(slot, status) }
        slots[s].phase = .sending
        slots[s].connected = true
        scheduler.beginStep(slot)
        var buf = TCPProbe.request.buffer
        let rc = uv_write(clientWrites + s, uvStream(clients + s), &buf, 1, nil)
        if rc < 0 { return finish(slot, .send, errno: -rc) }
        uv_read_start(uvStream(clients + s), TCPProbe.allocate, TCPProbe.onClientRead)
    }

    private static let onServerRead: uv_read_cb = { stream, nread, _ in
        let probe = TCPProbe.probe(stream!.pointee.data)
        probe.serverRead(index(stream!, in: probe.servers), nread)
    }

    private func serverRead(_ slot: Int32, _ nread: Int) {
        let s = Int(slot)
        guard slots[s].phase == .sending, nread != 0 else { return }
        if nread < 0 { return finish(slot, .send, errno: nread == Int(UV_EOF.rawValue) ? 0 : Int32(-nread)) }
        guard TCPProbe.request.matches(readBuffer, count: nread, at: &slots[s].serverMatched) else {
            return finish(slot, .send, errno: EBADMSG)
        }
        guard Int(slots[s].serverMatched) == TCPProbe.request.count else { return }
        slots[s].phase = .replying
        scheduler.beginStep(slot)
        var buf = TCPProbe.reply.buffer
        let rc = uv_write(serverWrites + s, uvStream(servers + s), &buf, 1, nil)
        if rc < 0 { finish(slot, .recv, errno: -rc) }
    }

    private static let onClientRead: uv_read_cb = { stream, nread, _ in
        let probe = TCPProbe.probe(stream!.pointee.data)
        probe.clientRead(index(stream!, in: probe.clients), nread)
    }

    private func clientRead(_ slot: Int32, _ nread: Int) {
        let s = Int(slot)
        let phase = slots[s].phase
        guard phase == .sending || phase == .replying, nread != 0 else { return }
        let missed: Outcome = phase == .sending ? .send : .recv
        if nread < 0 {
            // Reset before our listener accepted: that is what libuv's answer to EMFILE in accept looks like
            // (it accepts and closes pending connections). Suspect; the port is tested again.
            let suspect = phase == .sending && !slots[s].accepted
            return finish(slot, missed, errno: nread == Int(UV_EOF.rawValue) ? 0 : Int32(-nread), suspect: suspect)
        }
        guard TCPProbe.reply.matches(readBuffer, count: nread, at: &slots[s].clientMatched) else {
            return finish(slot, .recv, errno: EBADMSG)
        }
        if Int(slots[s].clientMatched) == TCPProbe.reply.count { finish(slot, .pass) }
    }
}

/// One line of the exchange, in memory that lives as long as the process (libuv writes from it asynchronously).
struct ProtocolLine: @unchecked Sendable {
    let bytes: UnsafeMutablePointer<CChar>
    let count: Int

    init(_ text: StaticString) {
        count = text.utf8CodeUnitCount
        bytes = .allocate(capacity: count)
        text.withUTF8Buffer { utf8 in
            for i in 0..<count { bytes[i] = CChar(bitPattern: utf8[i]) }
        }
    }

    var buffer: uv_buf_t { uv_buf_init(bytes, UInt32(count)) }

    /// Checks `count` received bytes against the line from offset `matched`, advancing it; false on a mismatch
    /// or on more bytes than the line has.
    func matches(_ data: UnsafeMutableRawPointer, count received: Int, at matched: inout UInt8) -> Bool {
        let offset = Int(matched)
        guard offset + received <= count, memcmp(data, bytes + offset, received) == 0 else { return false }
        matched += UInt8(received)
        return true
    }
}
