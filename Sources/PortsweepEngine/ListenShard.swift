import CLibUV
import PortsweepHTTP
public import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// One loop's share of a listen: a TCP listener and/or a UDP socket per port, connections answered per the reply
/// mode, events handed out once per loop iteration. Loop thread only, except `stop` (through `ListenShardHandle`).
public final class ListenShard {
    let loop: EventLoop
    private let ports: [UInt16]
    private let transports: Set<Transport>
    private let bind: IPAddress
    private let reply: ReplyMode
    private let limits: ListenLimits
    private let deliver: ([ListenEvent]) -> Void
    private var pending: [ListenEvent] = []

    private var listeners: [UInt16: UnsafeMutablePointer<uv_tcp_t>] = [:]
    private var udpSockets: [UInt16: UnsafeMutablePointer<uv_udp_t>] = [:]
    /// The port of each listener and UDP socket, by handle address.
    private var portOf: [UnsafeMutableRawPointer: UInt16] = [:]
    private var connectionList: [ObjectIdentifier: Connection] = [:]
    private var perPort: [UInt16: Int] = [:]
    private let readBuffer = UnsafeMutableRawPointer.allocate(byteCount: 65536, alignment: 16)
    private let check = uvAllocate(uv_check_t.self)
    private let sweepTimer = uvAllocate(uv_timer_t.self)
    private var openHandles = 0
    private var stopping = false
    private var stopped: (() -> Void)?

    /// Loop thread only.
    public init(loop: EventLoop, ports: [UInt16], transports: Set<Transport>, bind: IPAddress, reply: ReplyMode,
                limits: ListenLimits, deliver: @escaping ([ListenEvent]) -> Void) {
        loop.preconditionInEventLoop()
        self.loop = loop
        self.ports = ports
        self.transports = transports
        self.bind = bind
        self.reply = reply
        self.limits = limits
        self.deliver = deliver
    }

    private var me: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    private static func shard(_ data: UnsafeMutableRawPointer?) -> ListenShard {
        Unmanaged<ListenShard>.fromOpaque(data!).takeUnretainedValue()
    }

    // MARK: opening and closing

    /// Opens every listener; returns those that failed (nothing is served until the caller decides).
    public func open() -> [ListenFailure] {
        _ = Unmanaged.passRetained(self)  // released when the last own handle closed, after stop()
        uv_check_init(loop.uv, check)
        check.pointee.data = me
        uv_check_start(check) { ListenShard.shard($0!.pointee.data).flush() }
        uv_timer_init(loop.uv, sweepTimer)
        sweepTimer.pointee.data = me
        let period = max(100, min(1000, limits.idleTimeout.milliseconds / 4))
        uv_timer_start(sweepTimer, { ListenShard.shard($0!.pointee.data).closeIdle() }, period, period)
        openHandles = 2
        var failures: [ListenFailure] = []
        for port in ports {
            var address = SocketAddress(bind, port: port).storage
            if transports.contains(.tcp) {
                let tcp = uvAllocate(uv_tcp_t.self)
                uv_tcp_init(loop.uv, tcp)
                tcp.pointee.data = me
                openHandles += 1
                listeners[port] = tcp
                portOf[UnsafeMutableRawPointer(tcp)] = port
                var rc = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_bind(tcp, $0, 0) }
                }
                if rc == 0 { rc = uv_listen(uvStream(tcp), 511, ListenShard.onConnection) }
                if rc < 0 { failures.append(ListenFailure(port: port, transport: .tcp, errno: -rc)) }
            }
            if transports.contains(.udp) {
                let udp = uvAllocate(uv_udp_t.self)
                uv_udp_init(loop.uv, udp)
                udp.pointee.data = me
                openHandles += 1
                udpSockets[port] = udp
                portOf[UnsafeMutableRawPointer(udp)] = port
                var rc = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_bind(udp, $0, 0) }
                }
                if rc == 0 { rc = uv_udp_recv_start(udp, ListenShard.allocate, ListenShard.onDatagram) }
                if rc < 0 { failures.append(ListenFailure(port: port, transport: .udp, errno: -rc)) }
            }
        }
        return failures
    }

    /// Closes every listener and connection; `then` runs (on the loop) once every handle is closed.
    public func stop(then: @escaping () -> Void) {
        guard !stopping else { return }
        stopping = true
        stopped = then
        for connection in Array(connectionList.values) { connection.close(end: "listener stopped") }
        let onClose: uv_close_cb = { handle in
            let shard = ListenShard.shard(handle!.pointee.data)
            UnsafeMutableRawPointer(handle!).deallocate()
            shard.handleClosed()
        }
        for (_, tcp) in listeners { uv_close(uvHandle(tcp), onClose) }
        for (_, udp) in udpSockets { uv_close(uvHandle(udp), onClose) }
        listeners = [:]
        udpSockets = [:]
        portOf = [:]
        flush()
        uv_close(uvHandle(check)) { ListenShard.shard($0!.pointee.data).handleClosed() }
        uv_close(uvHandle(sweepTimer)) { ListenShard.shard($0!.pointee.data).handleClosed() }
    }

    private func handleClosed() {
        openHandles -= 1
        if openHandles == 0 && connectionList.isEmpty { finishStop() }
    }

    private func finishStop() {
        let stopped = self.stopped
        self.stopped = nil
        flush()
        stopped?()
        Unmanaged.passUnretained(self).release()
    }

    deinit {
        readBuffer.deallocate()
        check.deallocate()
        sweepTimer.deallocate()
    }

    private func flush() {
        guard !pending.isEmpty else { return }
        deliver(pending)
        pending.removeAll(keepingCapacity: true)
    }

    // MARK: TCP

    private static let onConnection: uv_connection_cb = { server, status in
        let shard = ListenShard.shard(server!.pointee.data)
        shard.accept(uvTCP(server!), status: status)
    }

    private func accept(_ server: UnsafeMutablePointer<uv_tcp_t>, status: Int32) {
        let port = portOf[UnsafeMutableRawPointer(server)] ?? 0
        if status < 0 {
            // EMFILE: libuv has already accepted and closed what was pending (its reserve descriptor), so the
            // listener neither spins nor stops; say so once per occurrence.
            pending.append(.rejected(port: port, client: nil, reason: "accept failed: \(UVError(status).name)"))
            return
        }
        let connection = Connection(shard: self, port: port)
        guard connection.accept(from: server) else { return }
        if connectionList.count >= limits.maxConnections || perPort[port, default: 0] >= limits.maxConnectionsPerPort {
            let which = connectionList.count >= limits.maxConnections ? "connection cap" : "per-port connection cap"
            pending.append(.rejected(port: port, client: connection.client, reason: "\(which) reached"))
            connection.discard()
            return
        }
        connectionList[ObjectIdentifier(connection)] = connection
        perPort[port, default: 0] += 1
        connection.start()
    }

    fileprivate func connectionEnded(_ connection: Connection, record: ConnectionRecord?) {
        if let record { pending.append(.connection(record)) }
        if connectionList.removeValue(forKey: ObjectIdentifier(connection)) != nil {
            perPort[connection.port, default: 1] -= 1
        }
        if stopping && openHandles == 0 && connectionList.isEmpty { finishStop() }
    }

    private func closeIdle() {
        let now = ContinuousClock.now
        for connection in Array(connectionList.values) where now - connection.lastActivity >= limits.idleTimeout {
            connection.close(end: "idle timeout")
        }
    }

    fileprivate var buffer: UnsafeMutableRawPointer { readBuffer }
    fileprivate var replyMode: ReplyMode { reply }

    private static let allocate: uv_alloc_cb = { handle, _, buf in
        let shard = ListenShard.shard(handle!.pointee.data)
        buf!.pointee = uv_buf_init(shard.readBuffer.assumingMemoryBound(to: CChar.self), 65536)
    }

    // MARK: UDP

    private static let onDatagram: uv_udp_recv_cb = { handle, nread, buf, addr, _ in
        guard nread >= 0, let addr else { return }
        let shard = ListenShard.shard(handle!.pointee.data)
        shard.datagram(handle!, count: nread, from: addr)
    }

    private func datagram(_ udp: UnsafeMutablePointer<uv_udp_t>, count: Int, from addr: UnsafePointer<sockaddr>) {
        let port = portOf[UnsafeMutableRawPointer(udp)] ?? 0
        let client = SocketAddress(addr)
        var sent = 0
        switch reply {
        case .silent:
            break
        case .echo:
            var buf = uv_buf_init(readBuffer.assumingMemoryBound(to: CChar.self), UInt32(count))
            sent = max(0, Int(uv_udp_try_send(udp, &buf, 1, addr)))
        case .http:
            var text = Array(ListenShard.body(port: port, client: client).utf8)
            sent = text.withUnsafeMutableBytes { raw in
                var buf = uv_buf_init(raw.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(raw.count))
                return max(0, Int(uv_udp_try_send(udp, &buf, 1, addr)))
            }
        }
        pending.append(.datagram(DatagramRecord(localPort: port, client: client, bytesIn: count, bytesOut: sent)))
    }

    static func body(port: UInt16, client: SocketAddress?) -> String {
        "Port test successful!\nPort \(port), client \(client.map { "\($0)" } ?? "unknown")\n"
    }
}

/// One accepted TCP connection: its handle, its framer (http mode), its counters.
private final class Connection {
    unowned let shard: ListenShard
    let port: UInt16
    let tcp = uvAllocate(uv_tcp_t.self)
    var client: SocketAddress?
    var bytesIn = 0
    var bytesOut = 0
    var requests = 0
    let started = ContinuousClock.now
    var lastActivity = ContinuousClock.now
    private var framer: HTTPRequestFramer?
    private var closing = false
    private var closeAfterWrites = false
    private var writesInFlight = 0
    private var end = "closed by client"
    private var record = true
    /// This connection's 200 answers, built on first use: the body names the port and the client, which do not
    /// change, so a keep-alive connection answers every later request without building anything. Four slots:
    /// HEAD or not, keep-alive or not.
    private var answers: [[UInt8]?] = []

    init(shard: ListenShard, port: UInt16) {
        self.shard = shard
        self.port = port
    }

    /// Accepts from `server`; false (and nothing to clean up but the handle) when it fails.
    func accept(from server: UnsafeMutablePointer<uv_tcp_t>) -> Bool {
        uv_tcp_init(shard.loop.uv, tcp)
        tcp.pointee.data = Unmanaged.passRetained(self).toOpaque()  // released in the close callback
        guard uv_accept(uvStream(server), uvStream(tcp)) == 0 else {
            record = false
            closeHandle()
            return false
        }
        client = SocketAddress.reading { uv_tcp_getpeername(tcp, $0, $1) }
        return true
    }

    /// Closes a connection refused by a cap, without a connection record.
    func discard() {
        record = false
        closeHandle()
    }

    func start() {
        if shard.replyMode == .http { framer = HTTPRequestFramer() }
        uv_read_start(uvStream(tcp), { handle, _, buf in
            let connection = Unmanaged<Connection>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            buf!.pointee = uv_buf_init(connection.shard.buffer.assumingMemoryBound(to: CChar.self), 65536)
        }, { stream, nread, _ in
            let connection = Unmanaged<Connection>.fromOpaque(stream!.pointee.data).takeUnretainedValue()
            connection.received(nread)
        })
    }

    private func received(_ nread: Int) {
        guard !closing, nread != 0 else { return }
        if nread < 0 {
            close(end: nread == Int(UV_EOF.rawValue) ? "closed by client" : UVError(Int32(nread)).name)
            return
        }
        bytesIn += nread
        lastActivity = .now
        let data = UnsafeRawBufferPointer(start: shard.buffer, count: nread)
        switch shard.replyMode {
        case .silent:
            return
        case .echo:
            send(data)
        case .http:
            respond(to: data)
        }
    }

    private func respond(to data: UnsafeRawBufferPointer) {
        guard let framer else { return }
        do {
            let heads = try framer.feed(data)
            // Pipelined requests read together are answered with one write.
            var batch: [UInt8] = []
            defer { if !batch.isEmpty { send(batch) } }
            for (index, head) in heads.enumerated() {
                requests += 1
                let keepAlive = head.keepAlive && !framer.isUpgraded
                let answer = answer(head: head.isHead, keepAlive: keepAlive)
                if heads.count == 1 {
                    send(answer)
                } else {
                    if index == 0 { batch.reserveCapacity(answer.count * heads.count) }
                    batch += answer
                }
                if !keepAlive {
                    end = "served"
                    closeAfterWrites = true
                    uv_read_stop(uvStream(tcp))
                    break
                }
            }
            if framer.isUpgraded && !closeAfterWrites {
                closeAfterWrites = true
                end = "upgrade refused"
            }
        } catch {
            send(response(status: "400 Bad Request", body: "Bad request: \(error.name)\n", head: false, keepAlive: false))
            end = "bad request (\(error.name))"
            closeAfterWrites = true
            uv_read_stop(uvStream(tcp))
        }
        if closeAfterWrites && writesInFlight == 0 { close(end: end) }
    }

    private func answer(head: Bool, keepAlive: Bool) -> [UInt8] {
        let slot = (head ? 2 : 0) + (keepAlive ? 1 : 0)
        if answers.isEmpty { answers = [nil, nil, nil, nil] }
        if let built = answers[slot] { return built }
        let built = response(status: "200 OK", body: ListenShard.body(port: port, client: client), head: head,
                             keepAlive: keepAlive)
        answers[slot] = built
        return built
    }

    private func response(status: String, body: String, head: Bool, keepAlive: Bool) -> [UInt8] {
        let bodyBytes = Array(body.utf8)
        var text = "HTTP/1.1 \(status)\r\nContent-Type: text/plain\r\nContent-Length: \(bodyBytes.count)\r\n"
        text += keepAlive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n"
        return Array(text.utf8) + (head ? [] : bodyBytes)
    }

    private func send(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { send($0) }
    }

    /// Writes at once what the socket takes; queues the rest (copied) with a write request.
    private func send(_ data: UnsafeRawBufferPointer) {
        guard !closing, data.count > 0 else { return }
        var written = 0
        if writesInFlight == 0 {
            var buf = uv_buf_init(UnsafeMutableRawPointer(mutating: data.baseAddress!).assumingMemoryBound(to: CChar.self), UInt32(data.count))
            let rc = uv_try_write(uvStream(tcp), &buf, 1)
            if rc > 0 { written = Int(rc) }
        }
        bytesOut += written
        guard written < data.count else { return }
        // The copy starts with its own length: libuv advances its buffers as it writes.
        let rest = data.count - written
        let copy = UnsafeMutableRawPointer.allocate(byteCount: rest + 8, alignment: 8)
        copy.storeBytes(of: rest, as: Int.self)
        (copy + 8).copyMemory(from: data.baseAddress! + written, byteCount: rest)
        let request = uvAllocate(uv_write_t.self)
        request.pointee.data = copy
        var buf = uv_buf_init((copy + 8).assumingMemoryBound(to: CChar.self), UInt32(rest))
        writesInFlight += 1
        let rc = uv_write(request, uvStream(tcp), &buf, 1) { request, status in
            let connection = Unmanaged<Connection>.fromOpaque(request!.pointee.handle.pointee.data).takeUnretainedValue()
            let size = request!.pointee.data.load(as: Int.self)
            request!.pointee.data.deallocate()
            request!.deallocate()
            connection.written(status: status, bytes: size)
        }
        if rc < 0 {
            writesInFlight -= 1
            copy.deallocate()
            request.deallocate()
            close(end: UVError(rc).name)
        }
    }

    private func written(status: Int32, bytes: Int) {
        writesInFlight -= 1
        if status == 0 { bytesOut += bytes }
        if closeAfterWrites && writesInFlight == 0 { close(end: end) }
    }

    func close(end: String) {
        guard !closing else { return }
        self.end = end
        closing = true
        closeHandle()
    }

    private func closeHandle() {
        closing = true
        uv_close(uvHandle(tcp)) { handle in
            let connection = Unmanaged<Connection>.fromOpaque(handle!.pointee.data).takeRetainedValue()
            connection.closed()
        }
    }

    private func closed() {
        let record = self.record
            ? ConnectionRecord(localPort: port, client: client, bytesIn: bytesIn, bytesOut: bytesOut, requests: requests,
                               duration: ContinuousClock.now - started, end: end)
            : nil
        tcp.deallocate()
        shard.connectionEnded(self, record: record)
    }
}
