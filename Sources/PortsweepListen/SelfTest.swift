public import PortsweepEngine
public import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The Sigma Port Listener's "Test Connection", for every port: connect to each listener through `target`, speak
/// the reply mode's language, and judge the answer with the sweep's outcome bits. FAIL: no TCP connection;
/// SEND: a datagram refused (ICMP); RECV: the reply missing or wrong. Silent listeners are judged by the
/// connection alone (TCP) or the absence of an ICMP error (UDP).
public struct SelfTest: Sendable {
    public var ports: PortSet
    public var transports: Set<Transport>
    public var reply: ReplyMode
    public var target: IPAddress
    public var timeout: Duration
    /// Tests in flight at once.
    public var concurrency: Int

    public init(ports: PortSet, transports: Set<Transport>, reply: ReplyMode, target: IPAddress,
                timeout: Duration = .seconds(3), concurrency: Int = 256) {
        self.ports = ports
        self.transports = transports
        self.reply = reply
        self.target = target
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
    }

    /// Tests every port; results in port order, TCP before UDP.
    public func run(on group: EventLoopGroup) async -> [PortResult] {
        let jobs = ports.sorted.flatMap { port in transports.sorted().map { (port, $0) } }
        var results: [PortResult] = []
        results.reserveCapacity(jobs.count)
        await withTaskGroup(of: PortResult.self) { taskGroup in
            var next = 0
            func add() {
                guard next < jobs.count else { return }
                let (port, transport) = jobs[next]
                let loop = group.loops[next % group.loops.count]
                next += 1
                taskGroup.addTask(executorPreference: loop) {
                    await transport == .tcp ? testTCP(port, on: loop) : testUDP(port, on: loop)
                }
            }
            for _ in 0..<concurrency { add() }
            for await result in taskGroup {
                results.append(result)
                add()
            }
        }
        return results.sorted { ($0.port, $0.transport) < ($1.port, $1.transport) }
    }

    static let probeLine = Array("client -> server\n".utf8)
    /// A UDP listener answers no more than it was asked (its http text is cut to the question's size): the
    /// question is as long as any answer.
    static let paddedProbe = probeLine + Array(repeating: UInt8(ascii: " "), count: 160) + [UInt8(ascii: "\n")]

    private func testTCP(_ port: UInt16, on loop: EventLoop) async -> PortResult {
        let address = SocketAddress(target, port: port)
        let line = SelfTest.probeLine
        let exchange: PortProber.TCPExchange
        switch reply {
        case .silent:
            exchange = await PortProber.tcp(address, payload: line, maxBytes: 0, timeout: timeout, on: loop)
        case .echo:
            exchange = await PortProber.tcp(address, payload: line, maxBytes: line.count, timeout: timeout, on: loop)
        case .http:
            // Connection: close, read to the end.
            exchange = await PortProber.tcp(address, payload: SelfTest.httpRequest, timeout: timeout, on: loop)
        }
        switch exchange {
        case .notConnected(let error):
            return PortResult(port: port, transport: .tcp, outcome: .fail, errno: error.errno)
        case .connected(let back, let error):
            let good: Bool
            switch reply {
            case .silent: good = error == nil
            case .echo: good = back == line
            case .http:
                let text = String(decoding: back, as: UTF8.self)
                good = text.hasPrefix("HTTP/1.1 200 OK") && text.contains("Port test successful!")
            }
            if good { return PortResult(port: port, transport: .tcp, outcome: .pass) }
            return PortResult(port: port, transport: .tcp, outcome: .recv, errno: error?.errno ?? EBADMSG)
        }
    }

    static let httpRequest = Array("GET / HTTP/1.1\r\nHost: self-test\r\nConnection: close\r\n\r\n".utf8)

    private func testUDP(_ port: UInt16, on loop: EventLoop) async -> PortResult {
        // Datagrams get lost: three tries within the timeout.
        let exchange = await PortProber.udp(SocketAddress(target, port: port),
                                            payload: reply == .http ? SelfTest.paddedProbe : SelfTest.probeLine,
                                            tries: 3, timeout: timeout, on: loop)
        switch exchange {
        case .answered(let back):
            let good: Bool
            switch reply {
            case .echo: good = back == SelfTest.probeLine
            case .http: good = String(decoding: back, as: UTF8.self).hasPrefix("Port test successful!")
            case .silent: good = false
            }
            return PortResult(port: port, transport: .udp, outcome: good ? .pass : .recv, errno: good ? 0 : EBADMSG)
        case .silence:
            // No answer: right for a silent listener (no ICMP error came back), a lost reply otherwise.
            return reply == .silent
                ? PortResult(port: port, transport: .udp, outcome: .pass)
                : PortResult(port: port, transport: .udp, outcome: .recv, errno: ETIMEDOUT)
        case .failed(let error):
            // Connect failing locally is this machine's; an ICMP error is SEND.
            return PortResult(port: port, transport: .udp, outcome: PortProber.isAboutThePath(error) ? .send : .erro,
                              errno: error.errno)
        }
    }
}
