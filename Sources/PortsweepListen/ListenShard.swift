import PortsweepEngine
import PortsweepHTTP
import UVLoop

/// What one loop of a listen holds: a `ConnectionShard` for its TCP ports (each connection answered per the
/// reply mode, under the limits) and a `DatagramSocket` per UDP port (answered from the address each datagram
/// was sent to, under the reply rules). Events are handed on once per loop iteration. Loop thread only.
final class ListenShard: ConnectionShardDelegate, DatagramSocketDelegate {
    struct Plan {
        var ports: [UInt16]
        var transports: Set<Transport>
        var bind: IPAddress
        var reply: ReplyMode
        var limits: ListenLimits
        /// Every UDP port of the whole listen (all loops and workers): datagrams from them get no answer.
        var ownUDPPorts: PortSet
        /// The whole listen's roster, for echo connections that ask.
        var roster: RosterBoard
    }

    let loop: EventLoop
    private let plan: Plan
    private let deliver: ([ListenEvent]) -> Void
    private var pending: [ListenEvent] = []
    private var tcp: ConnectionShard?
    private var udp: [DatagramSocket] = []
    private var gate: UDPReplyGate
    private var hook: IterationHook?
    private var udpCounters = ListenCounters()
    private var closing = 0
    private var stopped: (() -> Void)?

    init(loop: EventLoop, plan: Plan, budget: ConnectionBudget, deliver: @escaping ([ListenEvent]) -> Void) {
        loop.preconditionInEventLoop()
        self.loop = loop
        self.plan = plan
        self.deliver = deliver
        gate = UDPReplyGate(policy: plan.limits.udp, ownPorts: plan.ownUDPPorts)
        if plan.transports.contains(.tcp) {
            let reply = plan.reply, limits = plan.limits.connections, roster = plan.roster
            let shard = ConnectionShard(loop: loop, limits: limits, budget: budget) { connection in
                switch reply {
                case .http: HTTPConnectionHandler(.immediate(ListenAnswers(port: connection.port, client: connection.peer)),
                                                  limits: limits)
                case .echo: EchoReply(roster: roster)
                case .silent: SilentHandler()
                }
            }
            tcp = shard
            shard.delegate = self
        }
        hook = IterationHook(on: loop) { [unowned self] in flush() }
    }

    /// Opens every listener and socket; returns the ports that failed (the others serve at once).
    func open() -> [ListenFailure] {
        var failures: [ListenFailure] = []
        for port in plan.ports {
            let address = SocketAddress(plan.bind, port: port)
            if let tcp {
                do { try tcp.listen(on: address) } catch {
                    failures.append(ListenFailure(port: port, transport: .tcp, errno: error.errno))
                }
            }
            if plan.transports.contains(.udp) {
                do {
                    let socket = try DatagramSocket(address, on: loop)
                    socket.delegate = self
                    udp.append(socket)
                } catch {
                    failures.append(ListenFailure(port: port, transport: .udp, errno: error.errno))
                }
            }
        }
        return failures
    }

    /// Ports held (TCP listeners plus UDP sockets).
    var held: Int { (tcp?.listeningPorts ?? 0) + udp.count }

    var counters: ListenCounters {
        var counters = udpCounters
        counters.connections = tcp?.counters ?? ConnectionCounters()
        return counters
    }

    /// Closes everything; `then` runs on the loop once every handle is released.
    func stop(then: @escaping () -> Void) {
        stopped = then
        closing = 1 + udp.count + (tcp == nil ? 0 : 1)
        for socket in udp { socket.close { [self] in closed() } }
        udp = []
        tcp?.stop { [self] in closed() }
        closed()
    }

    private func closed() {
        closing -= 1
        guard closing == 0 else { return }
        flush()
        hook?.close()
        hook = nil
        tcp = nil
        let stopped = self.stopped
        self.stopped = nil
        stopped?()
    }

    private func flush() {
        guard !pending.isEmpty else { return }
        deliver(pending)
        pending.removeAll(keepingCapacity: true)
    }

    // MARK: ConnectionShardDelegate

    func connectionEnded(_ record: ConnectionRecord) { pending.append(.connection(record)) }

    func rejected(port: UInt16, client: SocketAddress?, reason: String) {
        pending.append(.rejected(port: port, client: client, reason: reason, time: WallClock.now))
    }

    // MARK: UDP

    func received(_ datagram: Datagram, on socket: DatagramSocket) {
        let port = socket.port
        var sent = 0
        var suppressed: UDPSuppression?
        if plan.reply != .silent {
            suppressed = gate.check(datagram, now: loop.now)
            if let suppressed {
                udpCounters.udpNotAnswered[suppressed.rawValue, default: 0] += 1
            } else {
                switch plan.reply {
                case .echo:
                    sent = (try? socket.reply(datagram.bytes, to: datagram).get()) ?? 0
                case .http:
                    // Never more than the question: the answer is cut to the datagram's size.
                    var text = Array(ListenAnswers.body(port: port, client: datagram.source).utf8)
                    if text.count > datagram.bytes.count {
                        text.removeLast(text.count - datagram.bytes.count)
                        udpCounters.udpTruncated += 1
                    }
                    sent = text.withUnsafeBytes { (try? socket.reply($0, to: datagram).get()) ?? 0 }
                case .silent:
                    break
                }
            }
        }
        pending.append(.datagram(DatagramRecord(localPort: port, client: datagram.source, bytesIn: datagram.bytes.count,
                                                bytesOut: sent, suppressed: suppressed)))
    }
}

/// Listen's HTTP answer on one connection, built once: the body names the port and the client, which do not
/// change, so a keep-alive connection answers every later request without building anything. Four slots: HEAD
/// or not, keep-alive or not.
final class ListenAnswers: HTTPImmediateResponder {
    private let port: UInt16
    private let client: SocketAddress?
    private var built: [[UInt8]?] = [nil, nil, nil, nil]

    init(port: UInt16, client: SocketAddress?) {
        self.port = port
        self.client = client
    }

    static func body(port: UInt16, client: SocketAddress?) -> String {
        "Port test successful!\nPort \(port), client \(client.map { "\($0)" } ?? "unknown")\n"
    }

    func response(to head: HTTPRequestHead, keepAlive: Bool, on connection: Connection) -> [UInt8] {
        let slot = (head.isHead ? 2 : 0) + (keepAlive ? 1 : 0)
        if let answer = built[slot] { return answer }
        let answer = HTTPResponseWriter.text(.ok, ListenAnswers.body(port: port, client: client), keepAlive: keepAlive,
                                             headOnly: head.isHead)
        built[slot] = answer
        return answer
    }
}

/// The reply rules of `UDPReplyPolicy`, for one loop: which datagrams get an answer.
struct UDPReplyGate {
    private let policy: UDPReplyPolicy
    private let ownPorts: PortSet
    private var local: Set<IPAddress> = []
    private var localReadAt: UInt64 = 0
    private struct Bucket {
        var tokens: Double
        var at: UInt64
    }
    private var buckets: LRUTable<IPAddress, Bucket>

    init(policy: UDPReplyPolicy, ownPorts: PortSet) {
        self.policy = policy
        self.ownPorts = ownPorts
        buckets = LRUTable(capacity: policy.sources)
    }

    /// nil: answer it; otherwise why not.
    mutating func check(_ datagram: Datagram, now: UInt64) -> UDPSuppression? {
        if datagram.bytes.isEmpty { return .empty }
        if let destination = datagram.destination, destination.isMulticast || destination.isBroadcast {
            return .groupDestination
        }
        let source = datagram.source
        if UDPReplyPolicy.reflectorPorts.contains(source.port) { return .reflectorPort }
        let fromHere = isLocal(source.ip.unmapped, now: now)
        if fromHere && ownPorts.contains(source.port) { return .ownPort }
        if fromHere || policy.repliesPerSecond == 0 { return nil }
        return spend(source.ip.unmapped, now: now) ? nil : .rateLimited
    }

    /// This host's addresses (re-read every 5 s: addresses come and go) and loopback.
    private mutating func isLocal(_ ip: IPAddress, now: UInt64) -> Bool {
        if ip.isLoopback { return true }
        if localReadAt == 0 || now &- localReadAt > 5000 {
            local = Set(EventLoop.interfaceAddresses().map(\.unmapped))
            localReadAt = max(1, now)
        }
        return local.contains(ip)
    }

    /// A token bucket per source: `repliesPerSecond` a second, bursts of as many.
    private mutating func spend(_ ip: IPAddress, now: UInt64) -> Bool {
        let rate = Double(policy.repliesPerSecond)
        var bucket = buckets[ip] ?? Bucket(tokens: rate, at: now)
        bucket.tokens = min(rate, bucket.tokens + Double(now &- bucket.at) * rate / 1000)
        bucket.at = now
        let allowed = bucket.tokens >= 1
        if allowed { bucket.tokens -= 1 }
        buckets.set(ip, bucket)
        return allowed
    }
}
