public import ServiceLifecycle

/// A sweep as a swift-service-lifecycle `Service`: `consume` reads its results as they come; a graceful
/// shutdown interrupts the sweep, so every result decided so far is still handed to `consume` before the
/// sequence ends (the summary then says interrupted). The service ends when the sweep does.
public struct SweepService: Service {
    public let sweep: Sweep
    private let consume: @Sendable (SweepResults) async -> Void

    public init(_ sweep: Sweep, consume: @escaping @Sendable (SweepResults) async -> Void) {
        self.sweep = sweep
        self.consume = consume
    }

    public func run() async {
        let sweep = self.sweep
        await withGracefulShutdownHandler {
            await consume(sweep.results())
        } onGracefulShutdown: {
            sweep.interrupt()
        }
    }
}
