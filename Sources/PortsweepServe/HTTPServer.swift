public import HTTPTypes
import PortsweepHTTP
public import UVLoop
import Synchronization

/// A request as a handler sees it: the head as swift-http-types values, and the peer.
public struct ServerRequest: Sendable {
    public var head: HTTPRequest
    public var peer: SocketAddress?
}

/// A response: the head and the body.
public struct ServerResponse: Sendable {
    public var head: HTTPResponse
    public var body: [UInt8]

    public init(status: HTTPResponse.Status, headers: HTTPFields = [:], body: [UInt8]) {
        head = HTTPResponse(status: status, headerFields: headers)
        self.body = body
    }
}

/// Limits that keep a slow or garbage client from holding the server.
public struct ServerLimits: Sendable {
    /// Open connections at most; more are closed at once.
    public var maxConnections: Int = 10_000
    /// Bytes of request head (request line and headers) at most: 431 beyond.
    public var maxHeadBytes: Int = 32 * 1024
    /// Request line (target) length at most: 414 beyond.
    public var maxTargetLength: Int = 4096
    /// A connection idle (or a request incomplete) for this long gets 408 and is closed.
    public var idleTimeout: Duration = .seconds(30)
    /// Bytes of request body at most: 413 beyond (declared or sent). The check API takes no body.
    public var maxBodyBytes: Int = 1024

    public init() {}
}

/// HTTP/1.1 on a loop: a listener, a task per connection (on the loop), requests framed by http-parser and
/// answered in order (pipelining), keep-alive, and the limits above.
public final class HTTPServer: Sendable {
    public typealias Handler = @Sendable (ServerRequest) async -> ServerResponse

    private let listener: TCPListener
    private let loops: [EventLoop]
    private let handler: Handler
    private let limits: ServerLimits
    private let connections = ConnectionCount()
    private let busy = Mutex(0)
    private let draining = Atomic<Bool>(false)

    /// Binds and listens; throws `UVError` (address in use, not local, privileged port).
    public init(on address: SocketAddress, group: EventLoopGroup, limits: ServerLimits = ServerLimits(),
                handler: @escaping Handler) async throws {
        listener = try await TCPListener.listen(on: address, loop: group.loops[0])
        loops = group.loops
        self.handler = handler
        self.limits = limits
    }

    public var localAddress: SocketAddress? { get async { await listener.localAddress } }

    /// Accepts and serves until the task is cancelled; then stops accepting and waits for the connections'
    /// current requests to be answered.
    public func run() async {
        // The accept loop runs on the listener's loop: no hop to Swift's cooperative pool per connection, and a
        // busy (or blocked) pool cannot keep the server from accepting.
        await withTaskExecutorPreference(loops[0]) { await acceptLoop() }
    }

    private func acceptLoop() async {
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                let connection: TCPConnection
                do {
                    connection = try await listener.accept(timeout: .seconds(3600))
                } catch {
                    if Task.isCancelled || draining.load(ordering: .relaxed) { break }
                    continue
                }
                guard connections.enter(limit: limits.maxConnections) else {
                    await connection.close(reset: true)
                    continue
                }
                group.addTask(executorPreference: connection.loop) { [self] in
                    await serve(connection)
                    connections.leave()
                }
            }
            await listener.close()
        }
    }

    /// Stops accepting, then waits (at most `within`) until no request is being answered. Connections stay
    /// open: cancel `run()`'s task afterwards to close them.
    public func drain(within: Duration) async {
        draining.store(true, ordering: .relaxed)
        await listener.close()
        let deadline = ContinuousClock.now + within
        while busy.withLock({ $0 }) > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    private func serve(_ connection: TCPConnection) async {
        let peer = await connection.remoteAddress
        let framer = HTTPRequestFramer(collectHeaders: true, maxBodyBytes: limits.maxBodyBytes)
        var headBytes = 0
        // A request head must arrive whole within the idle timeout of its first byte (no slow-loris).
        var requestStarted: ContinuousClock.Instant?
        var requestLineEnded = false
        serving: while true {
            let chunk: [UInt8]
            do {
                let deadline = (requestStarted ?? .now) + limits.idleTimeout
                chunk = try await connection.read(timeout: max(.milliseconds(1), deadline - .now))
            } catch let error as UVError where error == .timedOut {
                if headBytes > 0 { await send(connection, Self.error(.requestTimeout, "request timed out"), keepAlive: false) }
                break
            } catch {
                break
            }
            if chunk.isEmpty { break }
            if requestStarted == nil { requestStarted = .now }
            headBytes += chunk.count
            // Until the request line has ended, the bytes so far are all method and target: too many is a 414,
            // answered before the head limit is reached.
            if !requestLineEnded { requestLineEnded = chunk.contains(UInt8(ascii: "\n")) }
            let heads: [HTTPRequestHead]
            do {
                heads = try framer.feed(chunk)
            } catch {
                let status: HTTPResponse.Status = switch error.status {
                case 413: .contentTooLarge
                case 431: .requestHeaderFieldsTooLarge
                case 505: .httpVersionNotSupported
                default: .badRequest
                }
                let message = error.status == 400 ? "bad request: \(error.name)" : error.reason
                await send(connection, Self.error(status, message), keepAlive: false)
                break
            }
            if heads.isEmpty {
                if !requestLineEnded && headBytes > limits.maxTargetLength + Self.requestLineOverhead {
                    await send(connection, Self.error(.uriTooLong, "request target too long"), keepAlive: false)
                    break
                }
                if headBytes > limits.maxHeadBytes {
                    await send(connection, Self.error(.requestHeaderFieldsTooLarge, "request header fields too large"), keepAlive: false)
                    break
                }
                continue
            }
            headBytes = 0
            requestStarted = nil
            requestLineEnded = false
            for head in heads {
                if head.target.utf8.count > limits.maxTargetLength {
                    await send(connection, Self.error(.uriTooLong, "request target too long"), keepAlive: false)
                    break serving
                }
                var fields = HTTPFields()
                for (name, value) in head.headers {
                    if let fieldName = HTTPField.Name(name) { fields.append(HTTPField(name: fieldName, value: value)) }
                }
                let request = HTTPRequest(method: HTTPRequest.Method(head.method) ?? .get, scheme: nil,
                                          authority: head.headers.first { $0.name.lowercased() == "host" }?.value,
                                          path: head.target, headerFields: fields)
                busy.withLock { $0 += 1 }
                let response = await handler(ServerRequest(head: request, peer: peer))
                let keepAlive = head.keepAlive && !framer.isUpgraded && !draining.load(ordering: .relaxed)
                let sent = await send(connection, response, keepAlive: keepAlive, headOnly: head.isHead)
                busy.withLock { $0 -= 1 }
                guard sent else { break serving }
                if !keepAlive { break serving }
            }
        }
        await connection.close()
    }

    /// Method, spaces and version around the target: `OPTIONS ` + ` HTTP/1.1\r\n`.
    static let requestLineOverhead = 32

    static func error(_ status: HTTPResponse.Status, _ message: String) -> ServerResponse {
        ServerResponse(status: status, headers: [.contentType: "text/plain"], body: Array((message + "\n").utf8))
    }

    /// Writes a response; false when the connection failed.
    @discardableResult
    private func send(_ connection: TCPConnection, _ response: ServerResponse, keepAlive: Bool,
                      headOnly: Bool = false) async -> Bool {
        var text = "HTTP/1.1 \(response.head.status.code) \(response.head.status.reasonPhrase)\r\n"
        for field in response.head.headerFields where field.name != .contentLength && field.name != .connection {
            text += "\(field.name.rawName): \(field.value)\r\n"
        }
        text += "Content-Length: \(response.body.count)\r\n"  // HEAD: the length a GET would have
        text += keepAlive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n"
        do {
            try await connection.write(Array(text.utf8) + (headOnly ? [] : response.body), timeout: limits.idleTimeout)
            return true
        } catch {
            return false
        }
    }
}

/// Open connections, bounded.
private final class ConnectionCount: Sendable {
    private let count = Mutex(0)
    func enter(limit: Int) -> Bool {
        count.withLock { value in
            guard value < limit else { return false }
            value += 1
            return true
        }
    }
    func leave() { count.withLock { $0 -= 1 } }
}
