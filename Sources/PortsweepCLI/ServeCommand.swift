import Foundation
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
            POST /sweep probes many ports of the caller at once, for `portsweep sweep --via http://server:8000`. \
            Exit status: 0 after SIGTERM/SIGINT, 2 when the listen address cannot be used, 64 bad usage.
            """)

    @Option(name: .long, help: ArgumentHelp("Address and port to serve on. (default: 0.0.0.0:8000)", valueName: "ADDR:PORT"), transform: SocketAddress.parse)
    var listen = SocketAddress(.anyV4, port: 8000)

    @Option(name: .long, help: ArgumentHelp("Probe timeout in seconds. (default: 3)", valueName: "SECONDS"), transform: Seconds.parse)
    var timeout = Seconds(3)

    @Option(name: .long, help: ArgumentHelp("Checks per client address: N/SECONDS (default 4/60), or off.", valueName: "N/SECONDS"),
            transform: RateLimitOption.parse)
    var rateLimit = RateLimitOption(limit: .original)

    @Option(name: .long, help: ArgumentHelp("Believe X-Forwarded-For from these peers (repeatable).", valueName: "CIDR"), transform: CIDR.parse)
    var trustProxy: [CIDR] = []

    @Option(name: .long, help: ArgumentHelp("Checks in flight at most; more get 503.", valueName: "N"))
    var maxChecks: Int = 10_000

    @Option(name: .long, help: ArgumentHelp("Open connections at most.", valueName: "N"))
    var maxConnections: Int = 10_000

    @Option(name: .long, help: ArgumentHelp("Time a client has to send a whole request head, and to come back on an idle keep-alive connection. (default: 30)", valueName: "SECONDS"),
            transform: Seconds.parse)
    var idleTimeout = Seconds(30)

    @Option(name: .long, help: ArgumentHelp("Request body bytes at most (only POST /sweep takes one, a small JSON object); more is 413.", valueName: "BYTES"))
    var maxBody: Int = 8192

    @OptionGroup(title: "Bulk sweeps (POST /sweep)")
    var bulk: BulkOptions

    @Option(name: .long, help: ArgumentHelp("Clients the rate limiter remembers at most; the oldest are forgotten first (portsweep_rate_limit_evictions_total).", valueName: "N"))
    var rateLimitClients: Int = 100_000

    @Option(name: .long, help: ArgumentHelp("IPv6 clients in the same prefix of this length share one rate-limit budget.", valueName: "BITS"))
    var ipv6Prefix: Int = 64

    @Option(name: .long, help: "Access log format on stdout: text, json (JSON Lines).")
    var format: LogFormat = .text

    @OptionGroup(title: "Shared budgets (several instances behind a load balancer)")
    var store: StoreOptions

    func limits() -> ConnectionLimits {
        var limits = ConnectionLimits()
        limits.maxConnections = maxConnections
        limits.maxPerPort = maxConnections
        // One value for both, as before: a request head must be whole within it, and an idle keep-alive
        // connection is closed after it. No minimum rate: the API's requests are a few hundred bytes.
        limits.idleTimeout = idleTimeout.duration
        limits.requestTimeout = limits.idleTimeout
        limits.minRate = 0
        limits.maxBodyBytes = maxBody
        return limits
    }

    func validate() throws {
        guard timeout.value <= 60 else {
            throw ValidationError("invalid --timeout '\(SweepCommand.text(timeout.value))': must be more than 0 and at most 60 seconds")
        }
        guard maxChecks >= 1, maxConnections >= 1 else {
            throw ValidationError("invalid --max-checks or --max-connections: must be at least 1")
        }
        try bulk.validate()
        guard maxBody >= 0 else { throw ValidationError("invalid --max-body '\(maxBody)': must be 0 or more") }
        guard rateLimitClients >= 1 else {
            throw ValidationError("invalid --rate-limit-clients '\(rateLimitClients)': must be at least 1")
        }
        guard (1...128).contains(ipv6Prefix) else {
            throw ValidationError("invalid --ipv6-prefix '\(ipv6Prefix)': must be from 1 to 128")
        }
        try store.validate()
        if store.rateLimitStore != nil && rateLimit.limit == nil && bulk.limits == nil {
            throw ValidationError("--rate-limit-store keeps the budgets of checks and bulk sweeps: with --rate-limit off and --no-bulk there are none")
        }
    }

    func run() async throws {
        let registry = bootstrapLogsAndMetrics()
        let notes = Logger(label: "portsweep.serve")
        var configuration = checkConfiguration()
        let group = try LocalResources.loops()
        defer { group.shutdown() }
        configuration.sharedStore = try await store.resolve(on: group.loops[0])
        // Armed before the server exists: a SIGTERM from here on is a drain, never a half-started exit.
        let signals = await SignalWatch.watch([SIGINT, SIGTERM], on: group.loops[0])
        defer { signals.stop() }
        let service = CheckService(configuration, group: group, accessLog: Logger(label: "portsweep.serve.access"),
                                   metricsText: { ServeMetricsHelp.annotate(registry.emitToBuffer()) })
        let server = try await startServer(on: group.loops[0]) { await service.handle($0) }
        notes.info("serving /check_port\(configuration.bulk == nil ? "" : " and /sweep") on \(server.localAddress)")
        // Served until a signal; then the drain ends when the last check in flight has its answer.
        let serving = HTTPServerService(server, drainWithin: configuration.probeTimeout + .seconds(2))
        if let shared = configuration.sharedStore { notes.info("budgets shared through \(shared.description), keys \(shared.keyPrefix)*") }
        do {
            _ = try await Lifecycle.run([serving], signals: signals) { signal in
                notes.info("stopping (\(signal == SIGINT ? "SIGINT" : "SIGTERM")), draining checks in flight")
            }
        } catch {
            await service.shutdown()
            throw error
        }
        await service.shutdown()
    }

    /// The access log goes to stdout (JSON Lines with --format json), notes to stderr; metrics to Prometheus.
    private func bootstrapLogsAndMetrics() -> PrometheusCollectorRegistry {
        let json = format == .json
        LoggingSystem.bootstrap { label in
            label == "portsweep.serve.access"
                ? LineLogHandler(stream: .stdout, json: json) : LineLogHandler(stream: .stderr, json: false)
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }

    private func checkConfiguration() -> CheckConfiguration {
        var configuration = CheckConfiguration()
        configuration.probeTimeout = timeout.duration
        configuration.rateLimit = rateLimit.limit
        configuration.rateLimitClients = rateLimitClients
        configuration.clientGrouping = ClientGrouping(ipv6Prefix: ipv6Prefix)
        configuration.trustedProxies = trustProxy
        configuration.maxProbes = maxChecks
        configuration.bulk = bulk.limits
        return configuration
    }

    /// A server that cannot start (address in use, not on this machine, out of descriptors) is a local error.
    private func startServer(on loop: EventLoop,
                             _ handler: @escaping HTTPConnectionHandler.Handler) async throws -> HTTPServer {
        do {
            return try await HTTPServer(on: listen, loop: loop, limits: limits(), metricsPrefix: "portsweep_http", handler: handler)
        } catch {
            Terminal.error("portsweep: cannot serve on \(listen): \(error)\n")
            if let error = error as? UVError, error.errno == EMFILE || error.errno == ENFILE {
                Terminal.error("portsweep: \(LocalResources.descriptorLimit())\n")
            }
            throw ExitCode(ExitStatus.localError)
        }
    }
}

/// `--rate-limit N/SECONDS` or `off`.
struct RateLimitOption: ArgumentValue, Sendable {
    let limit: RateLimit?

    static func parse(_ text: String) throws -> RateLimitOption {
        if text.lowercased() == "off" { return RateLimitOption(limit: nil) }
        let parts = text.split(separator: "/").map(String.init)
        guard parts.count == 2, let count = Int(parts[0]), count > 0, let seconds = Double(parts[1]), seconds > 0,
              seconds.isFinite else {
            throw ArgumentReason("expected N/SECONDS (such as 4/60) or off")
        }
        return RateLimitOption(limit: RateLimit(count: count, window: .milliseconds(Int64(seconds * 1000))))
    }

    var defaultValueDescription: String {
        limit.map { "\($0.count)/\(SweepCommand.text(Double($0.window.components.seconds)))" } ?? "off"
    }
}

/// The bulk endpoint's switches and budgets.
struct BulkOptions: ParsableArguments {
    @Flag(name: .long, help: "Turn POST /sweep off (404).")
    var noBulk = false

    @Option(name: .long, help: ArgumentHelp("Port tests (ports times protocols) per client address per hour; the default is two full sweeps of both protocols.", valueName: "N"))
    var bulkTestsPerHour: Int = BulkLimits().testsPerHour

    @Option(name: .long, help: ArgumentHelp("Bulk sweeps in progress at once, over all clients; more get 503.", valueName: "N"))
    var bulkSweeps: Int = BulkLimits().maxConcurrentSweeps

    @Option(name: .long, help: ArgumentHelp("Probes per second over all bulk sweeps together.", valueName: "N"))
    var bulkProbesPerSecond: Int = BulkLimits().probesPerSecond

    @Option(name: .long, help: ArgumentHelp("Require 'Authorization: Bearer KEY' on POST /sweep (default: $PORTSWEEP_API_KEY when set, so that the key stays out of ps).", valueName: "KEY"))
    var apiKey: String?

    func validate() throws {
        guard bulkTestsPerHour >= 1 else { throw ValidationError("invalid --bulk-tests-per-hour '\(bulkTestsPerHour)': must be at least 1") }
        guard bulkSweeps >= 1 else { throw ValidationError("invalid --bulk-sweeps '\(bulkSweeps)': must be at least 1") }
        guard (1...10_000_000).contains(bulkProbesPerSecond) else {
            throw ValidationError("invalid --bulk-probes-per-second '\(bulkProbesPerSecond)': must be from 1 to 10000000")
        }
        if let key = resolvedKey, key.isEmpty || key.utf8.contains(where: { $0 <= 32 || $0 >= 127 }) {
            throw ValidationError("invalid --api-key: must be printable ASCII without spaces")
        }
    }

    private var resolvedKey: String? { apiKey ?? ProcessInfo.processInfo.environment["PORTSWEEP_API_KEY"] }

    var limits: BulkLimits? {
        guard !noBulk else { return nil }
        var limits = BulkLimits()
        limits.testsPerHour = bulkTestsPerHour
        limits.maxConcurrentSweeps = bulkSweeps
        limits.probesPerSecond = bulkProbesPerSecond
        limits.apiKey = resolvedKey
        return limits
    }
}

/// `--rate-limit-store` and what goes with it. The password comes from a file or the environment only.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Keep the check and bulk budgets in Redis, shared by every instance naming the same store and --redis-key-prefix; while Redis cannot be reached each instance limits on its own (logged, portsweep_rate_limit_store_up).", valueName: "redis://HOST[:PORT]"),
            transform: RedisURL.parse)
    var rateLimitStore: RedisURL?

    @Option(name: .long, help: ArgumentHelp("Redis AUTH password: the first line of FILE (default: $PORTSWEEP_REDIS_PASSWORD when set).", valueName: "FILE"))
    var redisPasswordFile: String?

    @Option(name: .long, help: ArgumentHelp("Start of every Redis key of this service.", valueName: "PREFIX"))
    var redisKeyPrefix = "portsweep:"

    @Option(name: .long, help: ArgumentHelp("Deadline of each Redis command, in seconds; past it the decision is this instance's own. (default: 0.25)", valueName: "SECONDS"),
            transform: Seconds.parse)
    var redisTimeout = Seconds(0.25)

    func validate() throws {
        guard rateLimitStore != nil else {
            if let redisPasswordFile { throw ValidationError("--redis-password-file \(redisPasswordFile) has no use without --rate-limit-store") }
            return
        }
        guard !redisKeyPrefix.isEmpty, redisKeyPrefix.utf8.count <= 64, !redisKeyPrefix.contains(where: { $0.isWhitespace }) else {
            throw ValidationError("invalid --redis-key-prefix '\(redisKeyPrefix)': 1 to 64 characters, no spaces")
        }
        guard redisTimeout.value <= 10 else {
            throw ValidationError("invalid --redis-timeout '\(SweepCommand.text(redisTimeout.value))': must be more than 0 and at most 10 seconds")
        }
        _ = try password()
    }

    /// The file's first line, or the environment's value; nil for none.
    func password() throws -> String? {
        if let redisPasswordFile {
            guard let text = try? String(contentsOfFile: redisPasswordFile, encoding: .utf8) else {
                throw ValidationError("cannot read --redis-password-file '\(redisPasswordFile)'")
            }
            guard let line = text.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init), !line.isEmpty else {
                throw ValidationError("--redis-password-file '\(redisPasswordFile)' is empty")
            }
            return line.hasSuffix("\r") ? String(line.dropLast()) : line
        }
        if let value = ProcessInfo.processInfo.environment["PORTSWEEP_REDIS_PASSWORD"], !value.isEmpty { return value }
        return nil
    }

    /// The store with its address: a name is resolved here (hiredis would block the loop on getaddrinfo). A name
    /// that does not resolve is bad input (64), a resolver that cannot be reached a local error (2).
    func resolve(on loop: EventLoop) async throws -> SharedBudgetStore? {
        guard let url = rateLimitStore else { return nil }
        let address: IPAddress
        do {
            address = try await url.host.resolve(family: nil, on: loop)
        } catch let failure as Resolver.Failure {
            Terminal.error("portsweep: --rate-limit-store \(failure)\n")
            throw ExitCode(failure.isLocal ? ExitStatus.localError : ExitStatus.usage)
        }
        var store = SharedBudgetStore(host: address, port: Int(url.port), password: try password())
        store.keyPrefix = redisKeyPrefix
        store.timeout = redisTimeout.duration
        return store
    }
}
