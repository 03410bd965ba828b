import ArgumentParser
import Logging
import Metrics
import Prometheus
import PortsweepHTTP
import PortsweepServe
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// `portsweep serve`: the "check my port" web service.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve GET /check_port: probe the caller's own address and say whether the port is reachable.",
        discussion: """
            curl "server:8000/check_port?port=3000&protocol=udp" from the machine whose port you want checked. \
            Statuses: Reachable, Reachable and Verified, Unreachable, Filtered (TCP) or Reachable or Filtered (UDP). \
            Exit status: 0 after SIGTERM/SIGINT, 2 when the listen address cannot be used, 64 bad usage.
            """)

    @Option(name: .long, help: ArgumentHelp("Address and port to serve on.", valueName: "ADDR:PORT"))
    var listen: String = "0.0.0.0:8000"

    @Option(name: .long, help: ArgumentHelp("Probe timeout in seconds.", valueName: "SECONDS"))
    var timeout: Double = 3

    @Option(name: .long, help: ArgumentHelp("Checks per client address: N/SECONDS (default 4/60), or off.", valueName: "N/SECONDS"))
    var rateLimit: String = "4/60"

    @Option(name: .long, help: ArgumentHelp("Believe X-Forwarded-For from these peers (repeatable).", valueName: "CIDR"))
    var trustProxy: [String] = []

    @Option(name: .long, help: ArgumentHelp("Checks in flight at most; more get 503.", valueName: "N"))
    var maxChecks: Int = 10_000

    @Option(name: .long, help: ArgumentHelp("Open connections at most.", valueName: "N"))
    var maxConnections: Int = 10_000

    @Option(name: .long, help: ArgumentHelp("Time a client has to send a whole request head, and to come back on an idle keep-alive connection.", valueName: "SECONDS"))
    var idleTimeout: Double = 30

    @Option(name: .long, help: ArgumentHelp("Request body bytes at most (the API takes none); more is 413.", valueName: "BYTES"))
    var maxBody: Int = 1024

    @Option(name: .long, help: ArgumentHelp("Clients the rate limiter remembers at most; the oldest are forgotten first (portsweep_rate_limit_evictions_total).", valueName: "N"))
    var rateLimitClients: Int = 100_000

    @Option(name: .long, help: ArgumentHelp("IPv6 clients in the same prefix of this length share one rate-limit budget.", valueName: "BITS"))
    var ipv6Prefix: Int = 64

    @Option(name: .long, help: "Access log format on stdout: text, json (JSON Lines).")
    var format: LogFormat = .text

    func limits() -> ConnectionLimits {
        var limits = ConnectionLimits()
        limits.maxConnections = maxConnections
        limits.maxPerPort = maxConnections
        // One value for both, as before: a request head must be whole within it, and an idle keep-alive
        // connection is closed after it. No minimum rate: the API's requests are a few hundred bytes.
        limits.idleTimeout = .milliseconds(Int64(idleTimeout * 1000))
        limits.requestTimeout = limits.idleTimeout
        limits.minRate = 0
        limits.maxBodyBytes = maxBody
        return limits
    }

    func listenAddress() throws -> SocketAddress {
        guard let address = SocketAddress(parsing: listen) else {
            throw ValidationError("invalid --listen '\(listen)': expected ADDR:PORT, such as 0.0.0.0:8000 or [::]:8000")
        }
        return address
    }

    func limit() throws -> RateLimit? {
        if rateLimit.lowercased() == "off" { return nil }
        let parts = rateLimit.split(separator: "/").map(String.init)
        guard parts.count == 2, let count = Int(parts[0]), count > 0, let seconds = Double(parts[1]), seconds > 0 else {
            throw ValidationError("invalid --rate-limit '\(rateLimit)': expected N/SECONDS (such as 4/60) or off")
        }
        return RateLimit(count: count, window: .milliseconds(Int64(seconds * 1000)))
    }

    func validate() throws {
        _ = try listenAddress()
        _ = try limit()
        guard timeout.isFinite, timeout > 0, timeout <= 60 else {
            throw ValidationError("invalid --timeout '\(SweepCommand.text(timeout))': must be more than 0 and at most 60 seconds")
        }
        guard maxChecks >= 1, maxConnections >= 1 else {
            throw ValidationError("invalid --max-checks or --max-connections: must be at least 1")
        }
        guard idleTimeout.isFinite, idleTimeout > 0 else {
            throw ValidationError("invalid --idle-timeout '\(SweepCommand.text(idleTimeout))': must be more than 0 seconds")
        }
        guard maxBody >= 0 else { throw ValidationError("invalid --max-body '\(maxBody)': must be 0 or more") }
        guard rateLimitClients >= 1 else {
            throw ValidationError("invalid --rate-limit-clients '\(rateLimitClients)': must be at least 1")
        }
        guard (1...128).contains(ipv6Prefix) else {
            throw ValidationError("invalid --ipv6-prefix '\(ipv6Prefix)': must be from 1 to 128")
        }
        for cidr in trustProxy where CIDR(cidr) == nil {
            throw ValidationError("invalid --trust-proxy '\(cidr)': not an address block such as 10.0.0.0/8")
        }
    }

    func run() async throws {
        let json = format == .json
        LoggingSystem.bootstrap { label in
            label == "portsweep.serve.access"
                ? LineLogHandler(stream: .stdout, json: json) : LineLogHandler(stream: .stderr, json: false)
        }
        let notes = Logger(label: "portsweep.serve")
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        var configuration = CheckConfiguration()
        configuration.probeTimeout = .milliseconds(Int64(timeout * 1000))
        configuration.rateLimit = try limit()
        configuration.rateLimitClients = rateLimitClients
        configuration.clientGrouping = ClientGrouping(ipv6Prefix: ipv6Prefix)
        configuration.trustedProxies = trustProxy.compactMap(CIDR.init)
        configuration.maxProbes = maxChecks
        let group = try LocalResources.loops()
        defer { group.shutdown() }
        // Armed before the server exists: a SIGTERM from here on is a drain, never a half-started exit.
        let signals = await SignalWatch.watch([SIGINT, SIGTERM], on: group.loops[0])
        defer { signals.stop() }
        let service = CheckService(configuration, group: group, accessLog: Logger(label: "portsweep.serve.access"),
                                   metricsText: { registry.emitToBuffer() })
        let server: HTTPServer
        do {
            server = try await HTTPServer(on: try listenAddress(), loop: group.loops[0], limits: limits(),
                                          metricsPrefix: "portsweep_http") { request in
                await service.handle(request)
            }
        } catch {
            Terminal.error("portsweep: cannot serve on \(listen): \(error)\n")
            if let error = error as? UVError, error.errno == EMFILE || error.errno == ENFILE {
                Terminal.error("portsweep: \(LocalResources.descriptorLimit())\n")
            }
            throw ExitCode(ExitStatus.localError)
        }
        notes.info("serving /check_port on \(server.localAddress)")
        let signal = try await signals.next()
        notes.info("stopping (\(signal == SIGINT ? "SIGINT" : "SIGTERM")), draining checks in flight")
        await server.drain(within: configuration.probeTimeout + .seconds(2))
        await server.stop()
    }
}
