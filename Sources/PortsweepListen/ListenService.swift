public import ServiceLifecycle

/// A started `Listen` as a swift-service-lifecycle `Service`: it holds its ports (and its worker processes)
/// until its group shuts down, gracefully or not, then closes every listener and connection and ends the
/// workers; its events sequence then ends.
extension Listen: Service {
    public func run() async {
        try? await gracefulShutdown()
        await stop()
    }
}
