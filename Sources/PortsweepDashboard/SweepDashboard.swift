import Foundation
import HTTPTypes
import PortsweepHTTP
import PortsweepEngine
import PortsweepReport
import Synchronization
public import UVLoop

/// `sweep --dashboard`: the sweep's page, served on a loop of its own (the sweep's loops never run a line of
/// it) by portsweep's one HTTP server, on the one address the user named.
///
/// - `GET /` the page; `GET /events` Server-Sent Events, an update at most every `tick` with what changed (the
///   groups closed since the page's last update and those still growing, the progress and the counts);
/// - `GET /results.jsonl`, `GET /results.csv` the results so far, one record per port and protocol.
/// Every request needs the token or its cookie (`DashboardAccess`).
public final class SweepDashboard: Sendable {
    public let board: SweepBoard
    public let access: DashboardAccess
    public let localAddress: SocketAddress
    private let server: HTTPServer
    private let loop: EventLoop
    private let tick: Duration

    /// A few connections are all one person's browser needs; a slow reader gets more slack than a public
    /// server gives (a full sweep's first update can be large), and is cut beyond it.
    static var limits: ConnectionLimits {
        var limits = ConnectionLimits()
        limits.maxConnections = 16
        limits.maxPerPort = 16
        limits.maxQueuedBytes = 8 << 20
        limits.maxBodyBytes = 0
        limits.minRate = 0
        return limits
    }

    /// Opens the dashboard's loop and binds `address` (throws `UVError`: in use, not local, privileged).
    public static func start(_ board: SweepBoard, on address: SocketAddress, tick: Duration = .milliseconds(250),
                             token: String? = nil) async throws -> SweepDashboard {
        let loop = try EventLoop(name: "dashboard")
        let box = HandlerBox()
        do {
            let server = try await HTTPServer(on: address, loop: loop, limits: limits) { request in
                await box.dashboard?.handle(request) ?? ServerResponse(status: .serviceUnavailable, body: [])
            }
            let dashboard = SweepDashboard(board: board, server: server, loop: loop, tick: tick,
                                           access: DashboardAccess(port: server.localAddress.port, token: token))
            box.dashboard = dashboard
            return dashboard
        } catch {
            loop.shutdown()
            throw error
        }
    }

    private init(board: SweepBoard, server: HTTPServer, loop: EventLoop, tick: Duration, access: DashboardAccess) {
        self.board = board
        self.server = server
        self.loop = loop
        self.tick = tick
        self.access = access
        localAddress = server.localAddress
    }

    /// The address to open, with the token: `http://127.0.0.1:9900/?token=…` (an unspecified bind address is
    /// shown as loopback, which reaches it from this machine).
    public var url: String {
        var ip = localAddress.ip
        if ip == .anyV4 { ip = .loopbackV4 } else if ip == .anyV6 { ip = .loopbackV6 }
        let host = ip.family == .v6 ? "[\(ip)]" : "\(ip)"
        return "http://\(host):\(localAddress.port)/?token=\(access.token)"
    }

    /// Closes the streams and the server, then the loop.
    public func stop() async {
        await server.stop()
        loop.shutdown()
    }

    func handle(_ request: ServerRequest) async -> ServerResponse {
        let decision = access.decide(request.head)
        guard decision == .allow else { return access.response(for: decision) }
        let path = DashboardAccess.split(request.head.path ?? "/").path
        switch (request.head.method, path) {
        case (.get, "/"), (.head, "/"):
            return page(SweepDashboardPage.document(title: board.title, transports: board.transports), type: "text/html; charset=utf-8")
        case (.get, "/events"):
            var response = ServerResponse.serverSentEvents(events())
            response.head.headerFields.append(contentsOf: DashboardAccess.pageHeaders)
            return response
        case (.get, "/results.jsonl"), (.head, "/results.jsonl"):
            return download(.json, name: "portsweep-results.jsonl", type: "application/x-ndjson")
        case (.get, "/results.csv"), (.head, "/results.csv"):
            return download(.csv, name: "portsweep-results.csv", type: "text/csv; charset=utf-8")
        default:
            var headers = DashboardAccess.pageHeaders
            headers[.contentType] = "text/plain; charset=utf-8"
            return ServerResponse(status: .notFound, headers: headers, body: Array("Not found\n".utf8))
        }
    }

    private func page(_ text: String, type: String) -> ServerResponse {
        var headers = DashboardAccess.pageHeaders
        headers[.contentType] = type
        return ServerResponse(status: .ok, headers: headers, body: Array(text.utf8))
    }

    private func download(_ format: OutputFormat, name: String, type: String) -> ServerResponse {
        var renderer = ResultRenderer(options: RenderOptions(format: format, grouped: false))
        var lines = renderer.header()
        for result in board.results { lines += renderer.add(result) }
        lines += renderer.finish()
        var headers = DashboardAccess.pageHeaders
        headers[.contentType] = type
        headers[.contentDisposition] = "attachment; filename=\"\(name)\""
        return ServerResponse(status: .ok, headers: headers, body: Array(lines.map { $0 + "\n" }.joined().utf8))
    }

    /// Updates while the sweep runs and once more when it has ended; then a comment-like ping now and then,
    /// so that a proxy or the browser does not take the quiet stream for a dead one. The producer ends when
    /// the page goes (the stream's termination cancels it).
    private func events() -> AsyncStream<ServerSentEvent> {
        // Unbounded but small: the server pulls each event as soon as it is yielded and queues it on the socket,
        // where a reader that falls `maxQueuedBytes` behind is cut (its page reconnects and starts afresh).
        let (stream, continuation) = AsyncStream<ServerSentEvent>.makeStream(bufferingPolicy: .unbounded)
        let board = self.board, tick = self.tick
        let task = Task {
            var cursor = 0
            var quietTicks = 0
            var finalSent = false
            while !Task.isCancelled {
                if !finalSent {
                    let ended = board.phase != .running
                    let (json, next) = board.update(since: cursor)
                    cursor = next
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

/// Set once the dashboard exists: the server's handler is made before the dashboard it calls (a request
/// before that, which cannot carry the token yet, gets a 503).
private final class HandlerBox: Sendable {
    private let value = Mutex<SweepDashboard?>(nil)
    var dashboard: SweepDashboard? {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}
