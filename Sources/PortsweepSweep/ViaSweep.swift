import Foundation
import PortsweepEngine
import PortsweepHTTP
public import UVLoop

/// A checker `sweep --via` asks: `portsweep serve` somewhere outside, reached at `address`.
public struct Checker: Sendable {
    /// As the user gave it, for messages.
    public var url: String
    public var address: SocketAddress
    /// The `Host` header.
    public var host: String
    /// This sweep's token: the checker's probes carry it, anything else reaching the listeners is ignored.
    public var token: String
    public var apiKey: String?

    public init(url: String, address: SocketAddress, host: String, token: String, apiKey: String? = nil) {
        self.url = url
        self.address = address
        self.host = host
        self.token = token
        self.apiKey = apiKey
    }
}

/// Inbound through a checker: this host holds listeners on a window of ports, asks the checker (one keep-alive
/// connection, opened before any listener takes a port: with every port held, `connect()` would find no
/// ephemeral port) to probe them, combines what the checker saw with what the listeners heard, and moves on
/// to the next window. A window is as large as the descriptors allow; 65535 ports of both protocols take
/// several.
final class ViaRun: Sendable {
    let configuration: SweepConfiguration
    let checker: Checker
    let group: EventLoopGroup
    let board: ResultBoard
    let window: Int
    private let heard = HeardPorts()

    init(configuration: SweepConfiguration, checker: Checker, group: EventLoopGroup, board: ResultBoard, budget: DescriptorBudget) {
        self.configuration = configuration
        self.checker = checker
        self.group = group
        self.board = board
        // Per port: a TCP listener and a UDP socket; room kept for connections the checker makes meanwhile.
        let perPort = configuration.transports.count
        window = max(64, min(16_384, (budget.available - TokenListeners.maxConnections * 2) / perPort))
    }

    /// How a run ended short.
    enum Failure: Error {
        case checker(String)
        case local(LocalFailure)
    }

    /// Runs every window; throws when the checker cannot be reached, refuses, or goes away.
    func run() async throws(Failure) {
        let connection: TCPConnection
        do {
            connection = try await TCPConnection.connect(to: checker.address, on: group.loops[0], timeout: .seconds(10))
        } catch {
            throw .checker("cannot reach the checker at \(checker.url): \(Self.name(error))")
        }
        let listeners = await makeListeners()
        let ports = Array(Set(configuration.orderedTransports.flatMap { configuration.portsToTest($0) }))
        let ordered = configuration.order.arrange(ports.sorted())
        var start = 0
        do {
            while start < ordered.count {
                if Task.isCancelled { break }
                let chunk = Array(ordered[start..<min(ordered.count, start + window)])
                start += chunk.count
                try await sweepWindow(chunk, listeners: listeners, connection: connection)
            }
        } catch {
            await ViaRun.closeAll(listeners)
            await connection.close(reset: true)
            throw error
        }
        await ViaRun.closeAll(listeners)
        await connection.close()
    }

    private func makeListeners() async -> [TokenListeners] {
        let loops = group.loops
        // `Shard.deal` hands out runs of 64 ports: a loop may get up to a run more than an even share.
        let perLoop = window / loops.count + 64
        var made: [TokenListeners] = []
        for loop in loops {
            let deadline = configuration.timeout * 2 + .seconds(1)
            made.append(await loop.run { [heard, configuration, checker] in
                TokenListeners(on: loop, bind: configuration.bindAddress, token: checker.token, capacity: perLoop,
                               deadline: deadline, heard: heard)
            })
        }
        return made
    }

    private static func closeAll(_ listeners: [TokenListeners]) async {
        for listener in listeners {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                listener.loop.execute { listener.closeAll { done.resume() } }
            }
        }
    }

    /// One window: listeners up, the checker asked, the answers combined as they stream in, listeners down.
    private func sweepWindow(_ ports: [UInt16], listeners: [TokenListeners], connection: TCPConnection) async throws(Failure) {
        let transports = configuration.orderedTransports
        let dealt = Shard.deal(ports.sorted(), over: listeners.count)
        var decided = Set<Int>()
        var local: [PortResult] = []
        for (listener, share) in zip(listeners, dealt) {
            let failed = await listener.loop.run { listener.open(share, transports: transports) }
            for (port, transport, errno) in failed {
                if errno == EMFILE || errno == ENFILE { throw .local(.descriptorsExhausted(errno: errno)) }
                let outcome: Outcome = errno == EADDRINUSE ? .used : (errno == EACCES || errno == EPERM) ? .sudo : .erro
                local.append(PortResult(port: port, transport: transport, outcome: outcome, errno: errno))
                decided.insert(Self.key(port, transport))
            }
        }
        if !local.isEmpty { board.post(HolderLookup(ports: local.map(\.port)).fill(local)) }
        let wanted = transports.flatMap { transport in ports.filter { !decided.contains(Self.key($0, transport)) }.map { Self.key($0, transport) } }
        var failure: Failure?
        if !wanted.isEmpty {
            // Only what this host could listen on is asked: a port another program holds is its business.
            let asked = Set(wanted.map { UInt16($0 >> 1) }).sorted()
            let askedTransports = transports.filter { transport in wanted.contains { $0 & 1 == (transport == .tcp ? 0 : 1) } }
            do { try await ask(asked, transports: askedTransports, expecting: Set(wanted), on: connection) } catch { failure = error }
        }
        // The next window's listeners need these descriptors: wait until they are released.
        for (listener, share) in zip(listeners, dealt) {
            await withCheckedContinuation { (closed: CheckedContinuation<Void, Never>) in
                listener.loop.execute { listener.close(share) { closed.resume() } }
            }
        }
        if let failure { throw failure }
    }

    /// Sends the request and reads its answer to the end, posting verdicts as records arrive.
    private func ask(_ ports: [UInt16], transports: [Transport], expecting: Set<Int>, on connection: TCPConnection) async throws(Failure) {
        var request = BulkSweepRequest(ports: PortSet(ports).description, protocols: transports.map { $0.rawValue.lowercased() },
                                       timeoutMilliseconds: Self.milliseconds(configuration.timeout), token: checker.token)
        request.probesPerSecond = configuration.rate
        let body = (try? JSONEncoder().encode(request)).map(Array.init) ?? []
        var head = "POST /sweep HTTP/1.1\r\nHost: \(checker.host)\r\nContent-Type: application/json\r\n"
        if let key = checker.apiKey { head += "Authorization: Bearer \(key)\r\n" }
        head += "Content-Length: \(body.count)\r\nUser-Agent: portsweep\r\n\r\n"
        do {
            try await connection.write(Array(head.utf8) + body, timeout: .seconds(10))
        } catch {
            throw .checker("the checker at \(checker.url) went away: \(Self.name(error))")
        }
        let reader = HTTPResponseReader()
        var status = 0
        var errorBody: [UInt8] = []
        var pending: [UInt8] = []
        var remaining = expecting
        var ended = false  // the HTTP message is whole (the connection is ready for the next request)
        var finished = false  // the checker said it probed everything
        // The checker sends lines at least every 50 ms while it probes; a probe may wait out its timeout.
        let silence = configuration.timeout * 2 + .seconds(10)
        let decoder = JSONDecoder()
        while !ended {
            if Task.isCancelled { return }
            let bytes: [UInt8]
            do {
                bytes = try await connection.read(maxBytes: 256 * 1024, timeout: silence)
            } catch {
                if Task.isCancelled { return }
                throw .checker("the checker at \(checker.url) went away (\(Self.name(error)))")
            }
            let events: [HTTPResponseReader.Event]
            do {
                events = bytes.isEmpty ? try reader.finish() : try reader.feed(bytes)
            } catch {
                throw .checker("the checker at \(checker.url) went away: its answer was cut off (\(error.name))")
            }
            var results: [PortResult] = []
            for event in events {
                switch event {
                case .head(let code, _): status = code
                case .body(let chunk) where status != 200: errorBody += chunk.prefix(4096 - errorBody.count)
                case .body(let chunk):
                    pending += chunk
                    while let newline = pending.firstIndex(of: 0x0A) {
                        let line = pending[..<newline]
                        defer { pending.removeSubrange(...newline) }
                        if let record = try? decoder.decode(BulkProbeRecord.self, from: Data(line)),
                           let transport = Transport(wire: record.protocol), (1...65535).contains(record.port),
                           remaining.remove(Self.key(UInt16(record.port), transport)) != nil {
                            results.append(combine(record, transport))
                        } else if (try? decoder.decode(BulkSweepEnd.self, from: Data(line))) != nil {
                            finished = true
                        }
                    }
                case .end: ended = true
                }
            }
            if !results.isEmpty { board.post(results) }
        }
        guard status == 200 else { throw .checker(Self.refusal(status, errorBody, checker.url)) }
        guard finished, remaining.isEmpty else {
            throw .checker("the checker at \(checker.url) ended its answer without \(remaining.count) of the port tests")
        }
    }

    /// The two views made one verdict, in the local sweep's words.
    func combine(_ record: BulkProbeRecord, _ transport: Transport) -> PortResult {
        let port = UInt16(record.port)
        let errno = Self.errno(named: record.error)
        let outcome: Outcome
        if record.error?.hasPrefix("checker:") == true {
            outcome = .erro  // the checker's own trouble: no verdict on the path
        } else if record.answered {
            return PortResult(port: port, transport: transport, outcome: .pass)
        } else if transport == .tcp && !record.connected {
            outcome = .fail
        } else {
            outcome = heard.contains(port, transport) ? .recv : .send
        }
        return PortResult(port: port, transport: transport, outcome: outcome, errno: record.wrongAnswer ? EBADMSG : errno)
    }

    /// What a refusal says: the checker's own message (and wait time), or its status.
    static func refusal(_ status: Int, _ body: [UInt8], _ url: String) -> String {
        let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
        var message = (object?["error"] as? String) ?? "HTTP \(status)"
        if let wait = object?["wait_time"] as? String { message += " (wait \(wait))" }
        return "the checker at \(url) refused the sweep: \(message)"
    }

    static func key(_ port: UInt16, _ transport: Transport) -> Int { Int(port) << 1 | (transport == .tcp ? 0 : 1) }

    static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, atto) = duration.components
        return Int(seconds) * 1000 + Int(atto / 1_000_000_000_000_000)
    }

    static func name(_ error: any Error) -> String { (error as? UVError)?.name ?? "\(error)" }

    static func errno(named name: String?) -> Int32 {
        guard let name else { return 0 }
        let bare = name.hasPrefix("checker:") ? String(name.dropFirst(8)) : name
        return UVError.errno(named: bare) ?? EPROTO
    }
}

extension Transport {
    init?(wire: String) {
        switch wire {
        case "tcp": self = .tcp
        case "udp": self = .udp
        default: return nil
        }
    }
}
