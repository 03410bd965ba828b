import Foundation
import HTTPTypes
import PortsweepHTTP
public import PortsweepListen
public import UVLoop

/// What the listen dashboard asks of the command: start a listen from a form (checked by `ListenForm`), stop it.
public protocol ListenControl: Sendable {
    /// nil once listening; otherwise why not, in one line (the command line's message for a bad value).
    func start(_ form: ListenForm) async -> String?
    func stop() async
}

/// `listen --dashboard`: the Sigma Port Listener's window, as a page. `GET /` the page, `GET /events` its
/// updates (Server-Sent Events), `POST /start` (a `ListenForm` as JSON) and `POST /stop`.
///
/// A change of state is a POST that a page on another origin cannot forge: besides the cookie (SameSite=Strict,
/// which such a page's requests do not carry), it needs `Content-Type: application/json` (which a cross-origin
/// form cannot send, and a cross-origin script only after a preflight we never answer) and an `Origin` that is
/// this server's own.
public final class ListenDashboard: Sendable {
    public let board: ListenBoard
    private let server: DashboardServer

    public static func start(_ board: ListenBoard, control: any ListenControl, on address: SocketAddress,
                             tick: Duration = .milliseconds(250), token: String? = nil) async throws -> ListenDashboard {
        let routes = Routes(board: board, control: control, tick: tick)
        let server = try await DashboardServer.start(on: address, token: token, maxBody: 4096) { await routes.handle($0) }
        return ListenDashboard(board: board, server: server)
    }

    private init(board: ListenBoard, server: DashboardServer) {
        self.board = board
        self.server = server
    }

    public var url: String { server.url }
    public var localAddress: SocketAddress { server.localAddress }
    public func stop() async { await server.stop() }

    struct Routes: Sendable {
        let board: ListenBoard
        let control: any ListenControl
        let tick: Duration

        func handle(_ request: ServerRequest) async -> ServerResponse {
            let path = DashboardAccess.split(request.head.path ?? "/").path
            switch (request.head.method, path) {
            case (.get, "/"), (.head, "/"):
                return DashboardServer.page(ListenDashboardPage.document)
            case (.get, "/events"):
                let board = self.board
                return DashboardServer.events(DashboardServer.updates(tick: tick, more: { true }) { board.update(since: $0) })
            case (.post, "/start"):
                if let refusal = Self.refusal(request) { return refusal }
                guard let form = try? JSONDecoder().decode(ListenForm.self, from: Data(request.body)) else {
                    return Self.json(["error": "the body must be a JSON object with ports, bind, protocols and reply"], status: .badRequest)
                }
                if let error = await control.start(form) { return Self.json(["error": error], status: .badRequest) }
                return Self.json(["ok": "listening"], status: .ok)
            case (.post, "/stop"):
                if let refusal = Self.refusal(request) { return refusal }
                await control.stop()
                return Self.json(["ok": "stopped"], status: .ok)
            default:
                return DashboardServer.notFound
            }
        }

        /// A POST from anywhere but this server's own page.
        static func refusal(_ request: ServerRequest) -> ServerResponse? {
            let fields = request.head.headerFields
            let host = request.head.authority ?? ""
            let origin = fields[HTTPField.Name("Origin")!]
            let type = fields[.contentType]?.lowercased() ?? ""
            guard !host.isEmpty, origin == "http://\(host)", type.hasPrefix("application/json") else {
                return json(["error": "refused: a change of state must come from this dashboard's own page"], status: .forbidden)
            }
            return nil
        }

        static func json(_ object: [String: String], status: HTTPResponse.Status) -> ServerResponse {
            let body = (try? JSONEncoder().encode(object)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            return DashboardServer.page(body, type: "application/json", status: status)
        }
    }
}
