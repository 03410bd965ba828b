public import ServiceLifecycle

/// An `HTTPServer` as a swift-service-lifecycle `Service`: it serves until its group shuts down gracefully,
/// then drains (stops accepting, closes idle connections, ends streams, and returns once the last request in
/// flight has its answer, or after `drainWithin`) and closes. Cancelled instead: it closes at once.
public struct HTTPServerService: Service {
    public let server: HTTPServer
    public let drainWithin: Duration

    public init(_ server: HTTPServer, drainWithin: Duration) {
        self.server = server
        self.drainWithin = drainWithin
    }

    public func run() async {
        let graceful = (try? await gracefulShutdown()) != nil
        if graceful { await server.drain(within: drainWithin) }
        await server.stop()
    }
}
