import HTTPTypes
import PortsweepHTTP
import Synchronization
import UVLoop

/// What every dashboard shares: a loop of its own (the mode's loops never run a line of a page), portsweep's
/// one HTTP server on the one address the user named, the token and its cookie (`DashboardAccess`), and the
/// URL to print. A request is handed to the page's routes only once access is granted.
final class DashboardServer: Sendable {
    let access: DashboardAccess
    let localAddress: SocketAddress
    private let server: HTTPServer
    private let loop: EventLoop

    /// A few connections are all one person's browser needs; a slow reader gets more slack than a public
    /// server gives (a first update can be large), and is cut beyond it.
    static func limits(maxBody: Int) -> ConnectionLimits {
        var limits = ConnectionLimits()
        limits.maxConnections = 16
        limits.maxPerPort = 16
        limits.maxQueuedBytes = 8 << 20
        limits.maxBodyBytes = maxBody
        limits.minRate = 0
        return limits
    }

    /// Opens the loop and binds `address` (throws `UVError`: in use, not local, privileged).
    static func start(on address: SocketAddress, token: String?, maxBody: Int = 0,
                      routes: @escaping @Sendable (ServerRequest) async -> ServerResponse) async throws -> DashboardServer {
        let loop = try EventLoop(name: "dashboard")
        let access = Mutex<DashboardAccess?>(nil)
        do {
            let server = try await HTTPServer(on: address, loop: loop, limits: limits(maxBody: maxBody)) { request in
                // Set before the URL (and so the token) is known to anyone; until then, nothing gets in.
                guard let access = access.withLock({ $0 }) else { return ServerResponse(status: .serviceUnavailable, body: []) }
                let decision = access.decide(request.head)
                guard decision == .allow else { return access.response(for: decision) }
                return await routes(request)
            }
            let granted = DashboardAccess(port: server.localAddress.port, token: token)
            access.withLock { $0 = granted }
            return DashboardServer(server: server, loop: loop, access: granted)
        } catch {
            loop.shutdown()
            throw error
        }
    }

    private init(server: HTTPServer, loop: EventLoop, access: DashboardAccess) {
        self.server = server
        self.loop = loop
        self.access = access
        localAddress = server.localAddress
    }

    /// `http://127.0.0.1:9900/?token=…` (an unspecified bind address shows as loopback, which reaches it from
    /// this machine).
    var url: String {
        var ip = localAddress.ip
        if ip == .anyV4 { ip = .loopbackV4 } else if ip == .anyV6 { ip = .loopbackV6 }
        let host = ip.family == .v6 ? "[\(ip)]" : "\(ip)"
        return "http://\(host):\(localAddress.port)/?token=\(access.token)"
    }

    func stop() async {
        await server.stop()
        loop.shutdown()
    }

    // MARK: answers

    static func page(_ text: String, type: String = "text/html; charset=utf-8", status: HTTPResponse.Status = .ok) -> ServerResponse {
        var headers = DashboardAccess.pageHeaders
        headers[.contentType] = type
        return ServerResponse(status: status, headers: headers, body: Array(text.utf8))
    }

    static var notFound: ServerResponse { page("Not found\n", type: "text/plain; charset=utf-8", status: .notFound) }

    static func events(_ stream: AsyncStream<ServerSentEvent>) -> ServerResponse {
        var response = ServerResponse.serverSentEvents(stream)
        response.head.headerFields.append(contentsOf: DashboardAccess.pageHeaders)
        return response
    }

    /// A page's event stream: `next(cursor)` makes an update and the cursor after it, every `tick`, while
    /// `more()`; after that a ping now and then, so that a proxy or the browser does not take the quiet stream
    /// for a dead one. Ends when the page goes (the stream's termination cancels the producer).
    static func updates(tick: Duration, more: @escaping @Sendable () -> Bool,
                        next: @escaping @Sendable (Int) -> ([UInt8], Int)) -> AsyncStream<ServerSentEvent> {
        // Unbounded but small: the server pulls each event as soon as it is yielded and queues it on the socket,
        // where a reader that falls `maxQueuedBytes` behind is cut (its page reconnects and starts afresh).
        let (stream, continuation) = AsyncStream<ServerSentEvent>.makeStream(bufferingPolicy: .unbounded)
        let task = Task {
            var cursor = 0
            var quietTicks = 0
            var finalSent = false
            while !Task.isCancelled {
                if !finalSent {
                    let ended = !more()
                    let (json, after) = next(cursor)
                    cursor = after
                    continuation.yield(ServerSentEvent(event: "update", data: String(decoding: json, as: UTF8.self)))
                    finalSent = ended
                } else {
                    quietTicks += 1
                    if quietTicks % 60 == 0 { continuation.yield(ServerSentEvent(event: "ping", data: "")) }
                }
                try? await Task.sleep(for: tick)
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}
