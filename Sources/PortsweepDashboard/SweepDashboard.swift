import Foundation
import HTTPTypes
import PortsweepHTTP
import PortsweepEngine
import PortsweepReport
public import UVLoop

/// `sweep --dashboard`: the sweep's page, served on a loop of its own (the sweep's loops never run a line of
/// it) by portsweep's one HTTP server, on the one address the user named.
///
/// - `GET /` the page; `GET /events` Server-Sent Events, an update at most every `tick` with what changed (the
///   tests decided since the page's last update, as runs of ports, the progress and the counts);
/// - `GET /results.jsonl`, `GET /results.csv` the results so far, one record per port and protocol.
/// Every request needs the token or its cookie (`DashboardAccess`).
public final class SweepDashboard: Sendable {
    public let board: SweepBoard
    private let server: DashboardServer

    /// Opens the dashboard's loop and binds `address` (throws `UVError`: in use, not local, privileged).
    public static func start(_ board: SweepBoard, on address: SocketAddress, tick: Duration = .milliseconds(250),
                             token: String? = nil) async throws -> SweepDashboard {
        let routes = Routes(board: board, tick: tick)
        let server = try await DashboardServer.start(on: address, token: token) { await routes.handle($0) }
        return SweepDashboard(board: board, server: server)
    }

    private init(board: SweepBoard, server: DashboardServer) {
        self.board = board
        self.server = server
    }

    public var access: DashboardAccess { server.access }
    public var localAddress: SocketAddress { server.localAddress }
    /// The address to open, with the token.
    public var url: String { server.url }

    /// Closes the streams and the server, then the loop.
    public func stop() async { await server.stop() }

    struct Routes: Sendable {
        let board: SweepBoard
        let tick: Duration

        func handle(_ request: ServerRequest) async -> ServerResponse {
            let path = DashboardAccess.split(request.head.path ?? "/").path
            switch (request.head.method, path) {
            case (.get, "/"), (.head, "/"):
                return DashboardServer.page(SweepDashboardPage.document(title: board.title, transports: board.transports))
            case (.get, "/events"):
                let board = self.board
                return DashboardServer.events(DashboardServer.updates(tick: tick, more: { board.phase == .running }) {
                    board.update(since: $0)
                })
            case (.get, "/results.jsonl"), (.head, "/results.jsonl"):
                return download(.json, name: "portsweep-results.jsonl", type: "application/x-ndjson")
            case (.get, "/results.csv"), (.head, "/results.csv"):
                return download(.csv, name: "portsweep-results.csv", type: "text/csv; charset=utf-8")
            default:
                return DashboardServer.notFound
            }
        }

        private func download(_ format: OutputFormat, name: String, type: String) -> ServerResponse {
            var renderer = ResultRenderer(options: RenderOptions(format: format, grouped: false))
            var lines = renderer.header()
            for result in board.results { lines += renderer.add(result) }
            lines += renderer.finish()
            var response = DashboardServer.page(lines.map { $0 + "\n" }.joined(), type: type)
            response.head.headerFields[.contentDisposition] = "attachment; filename=\"\(name)\""
            return response
        }
    }
}
