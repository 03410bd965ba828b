import CLibUV
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The Incoming Port Tester's UDP test: a server socket bound on BIND:P; the client sends `client -> server\n` to
/// TARGET:P; the server checks it and replies `server -> client\n` to the sender; the client checks that.
///
/// One shared client socket per shard sends to every port and receives every reply (recvmmsg, a large receive
/// buffer): a socket per port would cost a descriptor, a bind and an epoll registration each. Replies are matched
/// to slots by their source port; ICMP port-unreachable errors by the original destination read from the socket's
/// error queue (IP_RECVERR). Datagrams get lost under load even on loopback, so the client resends at every
/// retransmit interval of a step, and duplicates are harmless.
final class UDPProbe: PortProbe {
    enum Phase: UInt8 {
        case idle
        /// Server bound; the client's line is on its way. Deadline miss: SEND.
        case sending
        /// The server has the line; its reply is on its way. Deadline miss: RECV.
        case replying
        case done
    }

    struct Slot {
        var phase = Phase.idle
        var port: UInt16 = 0
        var open = false
        var badRequest = false
        var badReply = false
    }

    let transport = Transport.udp
    unowned(unsafe) let scheduler: ShardScheduler
    private let uvLoop: UnsafeMutablePointer<uv_loop_t>
    private var slots: UnsafeMutablePointer<Slot>
    private let servers: UnsafeMutablePointer<uv_udp_t>
    private let client = uvAllocate(uv_udp_t.self)
    private var clientFD: Int32 = -1
    private var clientClosed: (() -> Void)?
    private let portSlot = UnsafeMutablePointer<Int32>.allocate(capacity: 65536)
    private static let serverBufferSize = 65536
    private static let clientBufferSize = 64 * 65536  // libuv reads up to 64 datagrams per recvmmsg with this
    private let serverBuffer = UnsafeMutableRawPointer.allocate(byteCount: serverBufferSize, alignment: 16)
    private let clientBuffer = UnsafeMutableRawPointer.allocate(byteCount: clientBufferSize, alignment: 16)
    private var bindAddress: sockaddr_storage
    private var targetAddress: sockaddr_storage
    private let family: IPAddress.Family

    /// Loop thread only. Opens the shared client socket; throws when it cannot (descriptors exhausted).
    init(scheduler: ShardScheduler, capacity: Int, bind: IPAddress, target: IPAddress, window: Int) throws(UVError) {
        self.scheduler = scheduler
        uvLoop = scheduler.loop.uv
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: Slot(), count: capacity)
        servers = .allocate(capacity: capacity)
        UnsafeMutableRawPointer(servers).initializeMemory(as: UInt8.self, repeating: 0, count: capacity * MemoryLayout<uv_udp_t>.stride)
        portSlot.initialize(repeating: -1, count: 65536)
        bindAddress = SocketAddress(bind, port: 0).storage
        targetAddress = SocketAddress(target, port: 0).storage
        family = target.family
        try openClient(window: window)
    }

    deinit {
        slots.deallocate()
        servers.deallocate()
        portSlot.deallocate()
        serverBuffer.deallocate()
        clientBuffer.deallocate()
        uvFree(client)
    }

    private var me: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    @inline(__always)
    private static func probe(_ data: UnsafeMutableRawPointer?) -> UDPProbe {
        Unmanaged<UDPProbe>.fromOpaque(data!).takeUnretainedValue()
    }

    private func openClient(window: Int) throws(UVError) {
        let af = family == .v4 ? AF_INET : AF_INET6
        try UVError.check(uv_udp_init_ex(uvLoop, client, UInt32(af) | UInt32(UV_UDP_RECVMMSG.rawValue)))
        client.pointee.data = me
        let wildcard = SocketAddress(family == .v4 ? .anyV4 : .anyV6, port: 0)
        var rc = wildcard.withSockAddr { uv_udp_bind(client, $0, 0) }
        if rc == 0, uv_fileno(uvHandle(client), &clientFD) == 0 {
            // Replies of a whole window can arrive between two reads: room for them, or they are dropped.
            var receive = Int32(min(16 << 20, max(1 << 20, window * 8192)))
            var send = Int32(min(4 << 20, max(256 << 10, window * 2048)))
            let size = socklen_t(MemoryLayout<Int32>.size)
            if setsockopt(clientFD, SOL_SOCKET, SO_RCVBUFFORCE, &receive, size) != 0 {
                setsockopt(clientFD, SOL_SOCKET, SO_RCVBUF, &receive, size)
            }
            if setsockopt(clientFD, SOL_SOCKET, SO_SNDBUFFORCE, &send, size) != 0 {
                setsockopt(clientFD, SOL_SOCKET, SO_SNDBUF, &send, size)
            }
            // ICMP errors go to the error queue with the original destination, so they can be told apart by port.
            var one: Int32 = 1
            if family == .v4 {
                setsockopt(clientFD, Int32(IPPROTO_IP), IP_RECVERR, &one, size)
            } else {
                setsockopt(clientFD, Int32(IPPROTO_IPV6), IPV6_RECVERR, &one, size)
            }
            rc = uv_udp_recv_start(client, UDPProbe.allocateClient, UDPProbe.onClientReceive)
        }
        if rc < 0 {
            uv_close(uvHandle(client), nil)
            throw UVError(rc)
        }
    }

    // MARK: PortProbe

    func start(_ slot: Int32, port: UInt16) {
        let s = Int(slot)
        slots[s] = Slot(phase: .sending, port: port)
        let server = servers + s
        var rc = uv_udp_init(uvLoop, server)
        if rc < 0 { return setupFailed(slot, rc) }
        server.pointee.data = me
        slots[s].open = true
        bindAddress.setPort(port)
        // No SO_REUSEADDR: with it, a port another process holds with SO_REUSEADDR would bind and look free.
        rc = withUnsafePointer(to: &bindAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_bind(server, $0, 0) }
        }
        if rc == 0 { rc = uv_udp_recv_start(server, UDPProbe.allocateServer, UDPProbe.onServerReceive) }
        if rc < 0 { return setupFailed(slot, rc) }
        portSlot[Int(port)] = slot
        scheduler.beginStep(slot)
        send(slot)
    }

    func retransmit(_ slot: Int32) {
        let phase = slots[Int(slot)].phase
        if phase == .sending || phase == .replying { send(slot) }
    }

    func expire(_ slot: Int32) {
        let s = Int(slot)
        switch slots[s].phase {
        case .sending: finish(slot, .send, errno: slots[s].badRequest ? EBADMSG : ETIMEDOUT)
        case .replying: finish(slot, .recv, errno: slots[s].badReply ? EBADMSG : ETIMEDOUT)
        case .idle, .done: break
        }
    }

    func abandon(_ slot: Int32) {
        guard slots[Int(slot)].phase != .done else { return }
        slots[Int(slot)].phase = .done
        close(slot)
    }

    func close(then closed: @escaping () -> Void) {
        clientClosed = closed
        uv_close(uvHandle(client)) { handle in
            let probe = UDPProbe.probe(handle!.pointee.data)
            let closed = probe.clientClosed
            probe.clientClosed = nil
            closed?()
        }
    }

    // MARK: verdicts and handles

    private func finish(_ slot: Int32, _ outcome: Outcome, errno: Int32 = 0) {
        guard slots[Int(slot)].phase != .done else { return }
        slots[Int(slot)].phase = .done
        scheduler.finish(slot, outcome, errno: errno)
        close(slot)
    }

    private func setupFailed(_ slot: Int32, _ rc: Int32) {
        let s = Int(slot)
        guard slots[s].phase != .done else { return }
        if rc == UV_EADDRINUSE.rawValue { return finish(slot, .used, errno: -rc) }
        if rc == UV_EACCES.rawValue || rc == UV_EPERM.rawValue { return finish(slot, .sudo, errno: -rc) }
        if rc == UV_EMFILE.rawValue || rc == UV_ENFILE.rawValue || rc == UV_ENOBUFS.rawValue || rc == UV_ENOMEM.rawValue {
            slots[s].phase = .done
            scheduler.requeue(slot, errno: -rc)
            return close(slot)
        }
        finish(slot, .erro, errno: -rc)
    }

    private func close(_ slot: Int32) {
        let s = Int(slot)
        if portSlot[Int(slots[s].port)] == slot { portSlot[Int(slots[s].port)] = -1 }
        guard slots[s].open else { return scheduler.release(slot) }
        slots[s].open = false
        uv_close(uvHandle(servers + s)) { handle in
            let probe = UDPProbe.probe(handle!.pointee.data)
            let slot = Int32((UnsafeRawPointer(handle!) - UnsafeRawPointer(probe.servers)) / MemoryLayout<uv_udp_t>.stride)
            probe.slots[Int(slot)].phase = .idle
            probe.scheduler.release(slot)
        }
    }

    /// Sends the client's line to TARGET:port. A full send buffer is not an error: the next retransmit tries again.
    private func send(_ slot: Int32) {
        targetAddress.setPort(slots[Int(slot)].port)
        var buf = TCPProbe.request.buffer
        for _ in 0..<2 {
            let rc = withUnsafePointer(to: &targetAddress) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_try_send(client, &buf, 1, $0) }
            }
            // A pending ICMP error of another port is reported by the next send: attribute it, then send again.
            guard rc == UV_ECONNREFUSED.rawValue || rc == UV_EHOSTUNREACH.rawValue || rc == UV_ENETUNREACH.rawValue else { return }
            drainErrorQueue()
            guard slots[Int(slot)].phase == .sending || slots[Int(slot)].phase == .replying else { return }
        }
    }

    // MARK: callbacks

    private static let allocateServer: uv_alloc_cb = { handle, _, buf in
        let probe = UDPProbe.probe(handle!.pointee.data)
        buf!.pointee = uv_buf_init(probe.serverBuffer.assumingMemoryBound(to: CChar.self), UInt32(serverBufferSize))
    }

    private static let allocateClient: uv_alloc_cb = { handle, _, buf in
        let probe = UDPProbe.probe(handle!.pointee.data)
        buf!.pointee = uv_buf_init(probe.clientBuffer.assumingMemoryBound(to: CChar.self), UInt32(clientBufferSize))
    }

    private static let onServerReceive: uv_udp_recv_cb = { handle, nread, buf, addr, _ in
        guard nread > 0, let addr else { return }
        let probe = UDPProbe.probe(handle!.pointee.data)
        let slot = Int32((UnsafeRawPointer(handle!) - UnsafeRawPointer(probe.servers)) / MemoryLayout<uv_udp_t>.stride)
        probe.serverReceived(slot, from: addr, data: UnsafeMutableRawPointer(buf!.pointee.base!), count: nread)
    }

    private func serverReceived(_ slot: Int32, from addr: UnsafePointer<sockaddr>, data: UnsafeMutableRawPointer, count: Int) {
        let s = Int(slot)
        guard slots[s].phase == .sending || slots[s].phase == .replying else { return }
        var matched: UInt8 = 0
        guard count == TCPProbe.request.count, TCPProbe.request.matches(data, count: count, at: &matched) else {
            slots[s].badRequest = true
            return
        }
        if slots[s].phase == .sending {
            slots[s].phase = .replying
            scheduler.beginStep(slot)
        }
        // Every copy of the request gets a reply: the first reply may be the one that was lost.
        var reply = TCPProbe.reply.buffer
        _ = uv_udp_try_send(servers + s, &reply, 1, addr)
    }

    private static let onClientReceive: uv_udp_recv_cb = { handle, nread, buf, addr, _ in
        let probe = UDPProbe.probe(handle!.pointee.data)
        if nread < 0 { return probe.drainErrorQueue() }
        guard nread > 0, let addr else { return }
        probe.clientReceived(from: addr, data: UnsafeMutableRawPointer(buf!.pointee.base!), count: nread)
    }

    private func clientReceived(from addr: UnsafePointer<sockaddr>, data: UnsafeMutableRawPointer, count: Int) {
        let port = UDPProbe.port(of: addr)
        let slot = portSlot[Int(port)]
        guard slot >= 0, slots[Int(slot)].phase == .replying || slots[Int(slot)].phase == .sending else { return }
        var matched: UInt8 = 0
        if count == TCPProbe.reply.count, TCPProbe.reply.matches(data, count: count, at: &matched) {
            finish(slot, .pass)
        } else {
            slots[Int(slot)].badReply = true
        }
    }

    private static func port(of addr: UnsafePointer<sockaddr>) -> UInt16 {
        let raw = UnsafeRawPointer(addr)
        if Int32(addr.pointee.sa_family) == AF_INET {
            return UInt16(bigEndian: raw.load(fromByteOffset: MemoryLayout<sockaddr_in>.offset(of: \.sin_port)!, as: UInt16.self))
        }
        return UInt16(bigEndian: raw.load(fromByteOffset: MemoryLayout<sockaddr_in6>.offset(of: \.sin6_port)!, as: UInt16.self))
    }

    /// Reads the client socket's error queue: each entry is an ICMP error for a datagram we sent, with that
    /// datagram's destination. A port-unreachable for a port still waiting for the server is SEND, with the reason.
    private func drainErrorQueue() {
        var name = sockaddr_storage()
        var control = [UInt8](repeating: 0, count: 512)
        var payload = [UInt8](repeating: 0, count: 64)
        while true {
            let n: Int = payload.withUnsafeMutableBytes { payloadBytes in
                control.withUnsafeMutableBytes { controlBytes in
                    withUnsafeMutablePointer(to: &name) { namePointer in
                        var iov = iovec(iov_base: payloadBytes.baseAddress, iov_len: payloadBytes.count)
                        return withUnsafeMutablePointer(to: &iov) { iovPointer in
                            var message = msghdr()
                            message.msg_name = UnsafeMutableRawPointer(namePointer)
                            message.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
                            message.msg_iov = iovPointer
                            message.msg_iovlen = 1
                            message.msg_control = controlBytes.baseAddress
                            message.msg_controllen = controlBytes.count
                            let n = recvmsg(clientFD, &message, Int32(MSG_ERRQUEUE) | Int32(MSG_DONTWAIT))
                            return n < 0 ? -1 : message.msg_controllen
                        }
                    }
                }
            }
            if n < 0 { return }
            guard let errno = UDPProbe.icmpErrno(control, length: n) else { continue }
            let port = withUnsafePointer(to: &name) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { UDPProbe.port(of: $0) } }
            let slot = portSlot[Int(port)]
            if slot >= 0, slots[Int(slot)].phase == .sending { finish(slot, .send, errno: errno) }
        }
    }

    /// The errno of the first IP_RECVERR / IPV6_RECVERR control message (a `sock_extended_err`, whose first field
    /// is `ee_errno`).
    private static func icmpErrno(_ control: [UInt8], length: Int) -> Int32? {
        let header = MemoryLayout<cmsghdr>.stride
        var offset = 0
        return control.withUnsafeBytes { raw -> Int32? in
            while offset + header <= length {
                let len = raw.load(fromByteOffset: offset, as: Int.self)
                let level = raw.load(fromByteOffset: offset + 8, as: Int32.self)
                let type = raw.load(fromByteOffset: offset + 12, as: Int32.self)
                if len < header { return nil }
                if (level == Int32(IPPROTO_IP) && type == IP_RECVERR) || (level == Int32(IPPROTO_IPV6) && type == IPV6_RECVERR) {
                    return Int32(bitPattern: raw.load(fromByteOffset: offset + header, as: UInt32.self))
                }
                offset += (len + 7) & ~7
            }
            return nil
        }
    }
}
