import Logging
import ServiceLifecycle
import UVLoop

/// Runs a mode's services in a swift-service-lifecycle `ServiceGroup`, with our `SignalWatch` beside it: the
/// first SIGINT or SIGTERM becomes the group's graceful shutdown; the watch then gives the signals their default
/// action back, so a second one ends the process at once (as people expect of a second Ctrl-C). The group is
/// given no signals of its own: its handlers and libuv's would fight over the same signals.
enum Lifecycle {
    /// Runs `services` until they end, or until a signal shuts them down; returns that signal, for the exit
    /// status (130 for SIGINT, 143 for SIGTERM). `stopping` runs when the signal arrives, before the shutdown.
    /// A service that ends by itself (a sweep that is done) ends the group gracefully, which is not an error.
    static func run(_ services: [any Service], signals: SignalWatch,
                    stopping: @escaping @Sendable (Int32) -> Void = { _ in }) async throws -> Int32? {
        var logger = Logger(label: "portsweep.lifecycle")
        logger.logLevel = .error  // the group's own notes are not the command's output
        let configurations = services.map {
            ServiceGroupConfiguration.ServiceConfiguration(service: $0, successTerminationBehavior: .gracefullyShutdownGroup)
        }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: configurations, logger: logger))
        let watcher = Task { () -> Int32? in
            guard let signal = try? await signals.next() else { return nil }
            stopping(signal)
            await group.triggerGracefulShutdown()
            return signal
        }
        do {
            try await group.run()
        } catch {
            watcher.cancel()
            throw error
        }
        watcher.cancel()
        return await watcher.value
    }
}
