import ArgumentParser
import Foundation
import PortsweepEngine
import PortsweepListen
import PortsweepReport
import UVLoop

/// `portsweep listen`: the Sigma Port Listener, for one port or thousands, TCP and UDP.
struct ListenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "listen",
        abstract: "Hold listeners on a port or a range and answer every connection; log each one.",
        discussion: """
            Test a firewall rule from the outside with curl, nc, nmap or a browser. Every port of --ports is \
            listened on at once. The log (stdout) has one line per connection or datagram; Ctrl-C or SIGTERM \
            closes everything and prints a summary on stderr.
            Exit status: 0 after a clean stop, 2 when a port cannot be listened on (in use, privileged, an \
            address not on this machine, too many ports for the descriptor limit), 64 bad usage.
            """)

    @Option(name: .long, help: ArgumentHelp("Ports: 8080, 8000-8100, 22,80,8000-8100, or - for 1-65535.", valueName: "RANGE"))
    var ports: String

    @Option(name: .long, help: ArgumentHelp("Address to listen on (IPv4 or IPv6).", valueName: "ADDR"))
    var bind: String = "0.0.0.0"

    @Flag(name: .long, help: "Listen on TCP only (default: TCP and UDP).")
    var tcpOnly = false

    @Flag(name: .long, help: "Listen on UDP only (default: TCP and UDP).")
    var udpOnly = false

    @Option(name: .long, help: "Reply: http (200 OK, text/plain), echo, silent.")
    var reply: ReplyArgument = .http

    @Flag(name: .long, help: "No time at the start of log lines.")
    var noTimestamps = false

    @Option(name: .long, help: "Log format: text, json (JSON Lines).")
    var format: LogFormat = .text

    @Option(name: .long, help: ArgumentHelp("Open TCP connections at most, in all (per loop).", valueName: "N"))
    var maxConnections: Int = 10_000

    @Option(name: .long, help: ArgumentHelp("Open TCP connections at most on one port.", valueName: "N"))
    var maxPerPort: Int = 1_000

    @Option(name: .long, help: ArgumentHelp("Close a connection idle for this long.", valueName: "SECONDS"))
    var idleTimeout: Double = 60

    @Flag(name: [.short, .long], help: "No status line and no summary.")
    var quiet = false

    @Flag(name: .long, help: "Once listening, connect to every listener through --target and report the results like a sweep.")
    var selfTest = false

    @Option(name: .long, help: ArgumentHelp("Address the self-test connects to (default 127.0.0.1).", valueName: "IP"))
    var target: String = "127.0.0.1"

    // A worker process of a listen too large for one process: JSON Lines to the parent, start-up reported.
    @Flag(name: .long, help: .hidden)
    var worker = false

    func portSet() throws -> PortSet {
        do { return try PortSet(parsing: ports) } catch { throw ValidationError("\(error)") }
    }

    func bindAddress() throws -> IPAddress {
        guard let address = IPAddress(bind) else {
            throw ValidationError("invalid --bind '\(bind)': not an IPv4 or IPv6 address")
        }
        return address
    }

    func validate() throws {
        _ = try portSet()
        _ = try bindAddress()
        guard IPAddress(target) != nil else {
            throw ValidationError("invalid --target '\(target)': not an IPv4 or IPv6 address")
        }
        if tcpOnly && udpOnly { throw ValidationError("--tcp-only and --udp-only exclude each other") }
        guard maxConnections >= 1 else { throw ValidationError("invalid --max-connections '\(maxConnections)': must be at least 1") }
        guard maxPerPort >= 1 else { throw ValidationError("invalid --max-per-port '\(maxPerPort)': must be at least 1") }
        guard idleTimeout.isFinite, idleTimeout > 0 else {
            throw ValidationError("invalid --idle-timeout '\(SweepCommand.text(idleTimeout))': must be more than 0 seconds")
        }
    }

    func run() async throws {
        let transports: Set<Transport> = tcpOnly ? [.tcp] : udpOnly ? [.udp] : [.tcp, .udp]
        let configuration = ListenConfiguration(
            ports: try portSet(), bind: try bindAddress(), transports: transports, reply: reply.value,
            limits: ListenLimits(maxConnections: maxConnections, maxConnectionsPerPort: maxPerPort,
                                 idleTimeout: .milliseconds(Int64(idleTimeout * 1000))))
        if worker { return try await runWorker(configuration) }
        let log = ListenLog(format: format, timestamps: !noTimestamps)
        let group = try LocalResources.loops()
        defer { group.shutdown() }
        // Armed before any listener or worker exists: a signal during start-up is handled once start-up is over
        // (everything closed, workers stopped), instead of ending this process and orphaning the workers.
        let signals = await SignalWatch.watch([SIGINT, SIGTERM], on: group.loops[0])
        defer { signals.stop() }
        let budget = DescriptorBudget.raise()
        let perWorker = ListenWorkers.portsPerWorker(budget: budget, transports: transports.count)
        let labels = configuration.transports.sorted().map(\.rawValue).joined(separator: " and ")
        let what = "\(configuration.ports.count) \(labels) port\(configuration.ports.count == 1 ? "" : "s")"
            + " of \(configuration.bind) (\(configuration.ports)), reply \(configuration.reply.rawValue)"
        let events: AsyncStream<ListenEvent>
        let stop: @Sendable () async -> Void
        if configuration.ports.count <= perWorker {
            let listener = Listener(configuration, group: group)
            do {
                try await listener.start(budget: budget)
            } catch let error as ListenError {
                Terminal.error(ListenLog.explain(error, bind: configuration.bind))
                throw ExitCode(ExitStatus.localError)
            }
            log.note("listening on \(what)")
            events = listener.events
            stop = { await listener.stop() }
        } else {
            let workers = try ListenWorkers(ports: configuration.ports, portsPerWorker: perWorker,
                                            workerArguments: workerArguments(transports))
            let failures = workers.waitForStart()
            if !failures.isEmpty {
                workers.stop()
                for await _ in workers.events {}
                Terminal.error(ListenLog.explain(.portsFailed(failures), bind: configuration.bind))
                throw ExitCode(ExitStatus.localError)
            }
            log.note("listening on \(what), in \(workers.count) worker processes (the descriptor limit is"
                     + " \(budget.soft) per process)")
            events = workers.events
            stop = { workers.stop() }
        }

        let stats = ListenStats(listening: configuration.ports.count)
        let status = !quiet && Terminal.stderrIsTerminal ? Task { await stats.showStatus() } : nil
        let test = selfTest ? Task { [target] in
            let results = await SelfTest(ports: configuration.ports, transports: configuration.transports,
                                         reply: configuration.reply, target: IPAddress(target)!).run(on: group)
            guard !Task.isCancelled else { return }  // stopped before the self-test finished
            var renderer = ResultRenderer(options: RenderOptions(showProtocol: true, detailed: true,
                                                                 bothProtocols: configuration.transports.count == 2))
            var lines: [String] = []
            for result in results { lines += renderer.add(result) }
            lines += renderer.finish()
            let passed = results.filter(\.outcome.isPass).count
            log.note("self-test through \(target): \(passed) of \(results.count) passed")
            for line in lines { log.note("self-test: " + line) }
        } : nil
        let stopper = Task {
            let signal = try await signals.next()
            log.note("stopping (\(signal == SIGINT ? "SIGINT" : "SIGTERM"))")
            await stop()
        }
        for await event in events {
            stats.record(event)
            log.write(event)
            log.flush()  // the log is live: a line as each connection ends
        }
        stopper.cancel()
        test?.cancel()
        status?.cancel()
        await status?.value
        log.flush()
        if !quiet { Terminal.error(stats.summary() + "\n") }
    }

    /// The options a worker runs with (its ports are added per worker).
    private func workerArguments(_ transports: Set<Transport>) -> [String] {
        var arguments = ["--bind", bind, "--reply", reply.value.rawValue, "--max-connections", "\(maxConnections)",
                         "--max-per-port", "\(maxPerPort)", "--idle-timeout", "\(idleTimeout)"]
        if transports == [.tcp] { arguments.append("--tcp-only") }
        if transports == [.udp] { arguments.append("--udp-only") }
        return arguments
    }

    /// A worker: listen on its share, report start-up and events as JSON Lines, stop on SIGTERM.
    private func runWorker(_ configuration: ListenConfiguration) async throws {
        // A worker never outlives its parent, however the parent ends (SIGKILL, a crash): stdin is a pipe only
        // the parent writes to, and its end of file means the parent is gone; that becomes our own SIGTERM.
        ListenWorkers.stopAtEndOfInput()
        let log = ListenLog(format: .json, timestamps: true)
        let group = try LocalResources.loops()
        defer { group.shutdown() }
        let signals = await SignalWatch.watch([SIGINT, SIGTERM], on: group.loops[0])
        defer { signals.stop() }
        let listener = Listener(configuration, group: group)
        do {
            try await listener.start()
        } catch ListenError.portsFailed(let failures) {
            for failure in failures {
                log.record(LogRecord(event: "failed", protocol: failure.transport.rawValue, port: failure.port,
                                     requests: Int(failure.errno)))
            }
            log.record(LogRecord(event: "failed-end"))
            throw ExitCode(ExitStatus.localError)
        } catch {
            log.record(LogRecord(event: "too-many", message: "\(error)"))
            throw ExitCode(ExitStatus.localError)
        }
        log.record(LogRecord(event: "ready"))
        let stopper = Task {
            _ = try await signals.next()
            await listener.stop()
        }
        for await event in listener.events {
            log.write(event)
            log.flush()
        }
        stopper.cancel()
        log.flush()
    }
}

struct ReplyArgument: ExpressibleByArgument {
    let value: ReplyMode
    static let http = ReplyArgument(value: .http)
    init(value: ReplyMode) { self.value = value }
    init?(argument: String) {
        guard let value = ReplyMode(rawValue: argument.lowercased()) else { return nil }
        self.value = value
    }
    static var allValueStrings: [String] { ReplyMode.allCases.map(\.rawValue) }
    var defaultValueDescription: String { value.rawValue }
}

enum LogFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}
