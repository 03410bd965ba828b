import Foundation
import Benchmark
import LoadTools
import PortsweepEngine
import PortsweepHTTP
import PortsweepListen
import PortsweepServe
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// Serve mode through its public API, in process: checks per second under wrk, and what a Filtered or silent
/// check costs when hundreds run at once (the original answered one check at a time: ~18/s for open ports, one
/// per probe timeout for filtered ones). Run through ./run (a fresh network namespace, root) so the firewall
/// benchmark can drop a port without touching the machine's rules.
// Names have no spaces or slashes: `thresholds update` writes them with underscores but `thresholds check`
// looks for the name as written (ordo-one/benchmark#301, #373), so only such names are found again.
let benchmarks: @Sendable () -> Void = {
    signal(SIGPIPE, SIG_IGN)
    _ = DescriptorBudget.raise()
    let group = try! EventLoopGroup()
    let checksPerSecond = BenchmarkMetric.custom("checks/s", polarity: .prefersLarger, useScalingFactor: false)
    // Wall time of a batch of checks over the probe timeout, in percent: 100 means no check waited for another.
    let ofTimeout = BenchmarkMetric.custom("% of probe timeout", polarity: .prefersSmaller, useScalingFactor: false)

    Benchmark("serve:_check_port_of_a_Reachable_TCP_port,_wrk_100_connections_keep-alive,_no_rate_limit",
              configuration: .init(metrics: [checksPerSecond], units: [checksPerSecond: .count], warmupIterations: 0, maxDuration: .seconds(60),
                                   maxIterations: 3, skip: !Wrk.isInstalled).withTolerances) { benchmark in
        let fixture = try await ServeFixture.start(group: group, probeTimeout: .seconds(3))
        let open = try await OpenPort.start(group: group)
        let target = "/check_port?port=\(open.port)&protocol=tcp"
        let first = try await HTTPGet.body(fixture.address, target, on: group.next())
        precondition(first.contains("\"port_status\": \"Reachable\""), "not Reachable: \(first)")
        let result = try await Wrk.run(url: "http://\(fixture.address)\(target)", connections: 100, seconds: 5)
        precondition(result.non2xx == 0, "\(result.non2xx) answers were not 200")
        benchmark.measurement(checksPerSecond, Int(result.requestsPerSecond))
        await open.stop()
        await fixture.stop()
    }

    // The store's cost per check: 100 client addresses (X-Forwarded-For 198.18.0.1 to 198.18.0.100 from the trusted
    // 127.0.0.1; the namespace's loopback answers for all of 198.18.0.0/24, so each check probes a port that
    // listens on 0.0.0.0), a budget none of them spends, the budgets in memory against the same in a real
    // redis-server (Debian's), in one run. (Loopback itself is refused from X-Forwarded-For.)
    let aHundredClients = """
        local n = 0
        request = function()
          n = n + 1
          return wrk.format("GET", nil, {["X-Forwarded-For"] = "198.18.0." .. (n % 100 + 1)})
        end
        """
    for store in ["in_memory", "in_Redis"] {
        Benchmark("serve:_check_port_from_100_client_addresses,_wrk_100_connections,_budgets_\(store)",
                  configuration: .init(metrics: [checksPerSecond], units: [checksPerSecond: .count], warmupIterations: 0,
                                       maxDuration: .seconds(60), maxIterations: 3,
                                       skip: !Wrk.isInstalled || !Namespace.isPrivate
                                           || (store == "in_Redis" && Tool.find("redis-server") == nil)).withTolerances) { benchmark in
            try await Namespace.withLocalRoute("198.18.0.0/24")
            var redis: Process?
            var shared: SharedBudgetStore?
            if store == "in_Redis" {
                let port = FreePort.tcp()
                redis = try await Tool.start(path: Tool.find("redis-server")!.path,
                                             ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                             until: "Ready to accept connections")
                shared = SharedBudgetStore(host: .loopbackV4, port: Int(port))
            }
            var configuration = CheckConfiguration()
            configuration.rateLimit = RateLimit(count: 1_000_000_000, window: .seconds(60))
            configuration.trustedProxies = [CIDR("127.0.0.1/32")!]
            configuration.sharedStore = shared
            let fixture = try await ServeFixture.start(group: group, configuration)
            if shared != nil {
                let deadline = ContinuousClock.now + .seconds(10)
                while await !fixture.service.sharedStoreReady, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
                let ready = await fixture.service.sharedStoreReady
                precondition(ready, "the Redis store is not ready")
            }
            let open = try await OpenPort.start(group: group, bind: .anyV4)
            let target = "/check_port?port=\(open.port)&protocol=tcp"
            let result = try await Wrk.run(url: "http://\(fixture.address)\(target)", connections: 100, seconds: 5,
                                           script: aHundredClients)
            precondition(result.non2xx == 0, "\(result.non2xx) answers were not 200")
            benchmark.measurement(checksPerSecond, Int(result.requestsPerSecond))
            if let shared {
                // Every client's budget is in Redis: the checks were decided there, not by the fallback.
                let keys = try await Tool.run("redis-cli", ["-p", "\(shared.port)", "--raw", "dbsize"])
                precondition(keys.trimmingCharacters(in: .whitespacesAndNewlines) == "100", "Redis holds \(keys) keys, not 100")
            }
            await open.stop()
            await fixture.stop()
            // SIGKILL: a child of Foundation's Process can start with SIGTERM blocked (the mask is inherited), and
            // nothing of this Redis is worth a clean shutdown.
            if let redis {
                kill(redis.processIdentifier, SIGKILL)
                redis.waitUntilExit()
            }
        }
    }

    let timeout = Duration.seconds(1)
    for count in [1, 500] {
        Benchmark("serve:_\(count)_Filtered_TCP_check\(count == 1 ? "" : "s")_at_once_(nftables_drop,_probe_timeout_1_s)",
                  configuration: .init(metrics: [.wallClock, ofTimeout], warmupIterations: 0, maxDuration: .seconds(30),
                                       maxIterations: 5, skip: !Namespace.isPrivate).withTolerances) { benchmark in
            let fixture = try await ServeFixture.start(group: group, probeTimeout: timeout)
            let dropped = FreePort.tcp()
            try await Namespace.withTCPDropped(port: dropped) {
                try await checks(count, "/check_port?port=\(dropped)&protocol=tcp", expecting: "Filtered",
                                 fixture: fixture, benchmark: benchmark)
            }
            await fixture.stop()
        }
    }

    // A UDP port bound by a socket that never answers: no ICMP, no reply, so every check waits the full timeout.
    Benchmark("serve:_500_silent_UDP_checks_at_once_(probe_timeout_1_s)",
              configuration: .init(metrics: [.wallClock, ofTimeout], warmupIterations: 0, maxDuration: .seconds(30),
                                   maxIterations: 5).withTolerances) { benchmark in
        let fixture = try await ServeFixture.start(group: group, probeTimeout: timeout)
        let silent = SilentUDPPort.start()
        try await checks(500, "/check_port?port=\(silent.port)&protocol=udp", expecting: "Reachable or Filtered",
                         fixture: fixture, benchmark: benchmark)
        silent.close()
        await fixture.stop()
    }

    @Sendable func checks(_ count: Int, _ target: String, expecting status: String, fixture: ServeFixture,
                          benchmark: Benchmark) async throws {
        let start = ContinuousClock.now
        benchmark.startMeasurement()
        let answers = try await withThrowingTaskGroup(of: String.self) { tasks in
            for _ in 0..<count {
                let loop = group.next()
                tasks.addTask(executorPreference: loop) { try await HTTPGet.body(fixture.address, target, on: loop) }
            }
            return try await tasks.reduce(into: [String]()) { $0.append($1) }
        }
        benchmark.stopMeasurement()
        let elapsed = ContinuousClock.now - start
        let wrong = answers.filter { !$0.contains("\"port_status\": \"\(status)\"") }
        precondition(wrong.isEmpty, "\(wrong.count) of \(count) answers were not \(status): \(wrong[0])")
        benchmark.measurement(ofTimeout, Int((elapsed / timeout) * 100))
    }
}

/// A serve-mode server on 127.0.0.1, port 0, without a rate limit.
struct ServeFixture: Sendable {
    let address: SocketAddress
    let server: HTTPServer
    let service: CheckService

    static func start(group: EventLoopGroup, probeTimeout: Duration) async throws -> ServeFixture {
        var configuration = CheckConfiguration()
        configuration.rateLimit = nil
        configuration.probeTimeout = probeTimeout
        return try await start(group: group, configuration)
    }

    static func start(group: EventLoopGroup, _ configuration: CheckConfiguration) async throws -> ServeFixture {
        let service = CheckService(configuration, group: group)
        var limits = ConnectionLimits()
        limits.minRate = 0
        let server = try await HTTPServer(on: SocketAddress(.loopbackV4, port: 0), loop: group.loops[0], limits: limits) {
            request in await service.handle(request)
        }
        return ServeFixture(address: server.localAddress, server: server, service: service)
    }

    func stop() async {
        await server.stop()
        await service.shutdown()
    }
}

/// A TCP port with a listener (listen mode, silent) for Reachable checks.
struct OpenPort: Sendable {
    let port: UInt16
    let listener: Listen
    let draining: Task<Void, Never>

    static func start(group: EventLoopGroup, bind: IPAddress = .loopbackV4) async throws -> OpenPort {
        let port = FreePort.tcp()
        var limits = ListenLimits()
        limits.connections.maxPerPort = 100_000
        limits.connections.maxConnections = 100_000
        let listener = Listen(ListenConfiguration(ports: PortSet([port]), bind: bind, transports: [.tcp],
                                                  reply: .silent, limits: limits), group: group, descriptors: .current())
        _ = try await listener.start()
        // The events must be read, or they pile up for the whole run.
        let draining = Task { for await _ in listener.events {} }
        return OpenPort(port: port, listener: listener, draining: draining)
    }

    func stop() async {
        await listener.stop()
        await draining.value
    }
}

/// A bound UDP socket that reads nothing and answers nothing.
struct SilentUDPPort: Sendable {
    let fd: Int32
    let port: UInt16

    static func start() -> SilentUDPPort {
        let (fd, port) = LoopbackSocket.bound(SOCK_DGRAM)
        return SilentUDPPort(fd: fd, port: port)
    }

    func close() { _ = Glibc.close(fd) }
}
