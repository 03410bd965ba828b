import ArgumentParser
import Foundation
import PortsweepDashboard
import PortsweepEngine
import PortsweepHTTP
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
            A port that cannot be held (in use, privileged, an address not on this machine) is reported with \
            its reason and, where /proc shows it, its holder; the others are served.
            Exit status: 0 after a clean stop, 2 when no port could be held (or, with --strict, any port could \
            not), 64 bad usage.
            """)

    @Option(name: .long, help: ArgumentHelp("Ports: 8080, 8000-8100, 22,80,8000-8100, or - for 1-65535.", valueName: "RANGE"),
            transform: PortSet.parse)
    var ports: PortSet?

    @Option(name: .long, help: ArgumentHelp("Address to listen on (IPv4 or IPv6). (default: 0.0.0.0)", valueName: "ADDR"), transform: IPAddress.parse)
    var bind: IPAddress = .anyV4

    @OptionGroup var protocols: TransportOptions

    @Option(name: .long, help: "Reply: http (200 OK, text/plain), echo, silent.")
    var reply: ReplyArgument = .http

    @Flag(name: .long, help: "No time at the start of log lines.")
    var noTimestamps = false

    @Option(name: .long, help: "Log format: text, json (JSON Lines).")
    var format: LogFormat = .text

    @Option(name: .long, help: ArgumentHelp("Open TCP connections at most, over the whole listen (every loop and worker process); at the cap the least recently active one makes room.", valueName: "N"))
    var maxConnections: Int = 10_000

    @Option(name: .long, help: ArgumentHelp("Open TCP connections at most on one port; at the cap the port's least recently active one makes room.", valueName: "N"))
    var maxPerPort: Int = 1_000

    @Option(name: .long, help: ArgumentHelp("Close a connection that sends nothing for this long. (default: 60)", valueName: "SECONDS"),
            transform: Seconds.parse)
    var idleTimeout = Seconds(60)

    @Option(name: .long, help: ArgumentHelp("An HTTP request (head and body) must arrive whole within this long of its first byte; 408 after. (default: 10)", valueName: "SECONDS"),
            transform: Seconds.parse)
    var requestTimeout = Seconds(10)

    @Option(name: .long, help: ArgumentHelp("Close a connection that sends, but slower than this over 10 s (0: no minimum).", valueName: "BYTES/S"))
    var minRate: Int = 100

    @Option(name: .long, help: ArgumentHelp("Stop reading a connection while more than this much reply waits to be sent to it.", valueName: "BYTES"))
    var maxQueued: Int = 65_536

    @Option(name: .long, help: ArgumentHelp("HTTP request body bytes at most; 413 beyond.", valueName: "BYTES"))
    var maxBody: Int = 1 << 20

    @Option(name: .long, help: ArgumentHelp("UDP replies per second to one source address (0: no limit); raise it for a remote sweep of the whole range.", valueName: "N"))
    var udpReplyRate: Int = 50

    @Flag(name: .long, help: "Exit 2 if any port cannot be held (default: serve the others, exit 2 only when none could be held).")
    var strict = false

    @Flag(name: [.short, .long], help: "No status line and no summary.")
    var quiet = false

    @Flag(name: .long, help: "Once listening, connect to every listener through --target and report the results like a sweep.")
    var selfTest = false

    @Option(name: .long, help: ArgumentHelp("Address the self-test connects to. (default: 127.0.0.1)", valueName: "IP"), transform: IPAddress.parse)
    var target: IPAddress = .loopbackV4

    @Option(name: .long, help: ArgumentHelp("Serve the listen's page on ADDR:PORT, 127.0.0.1:9900 when no value follows: status, a form to start and stop listeners, the live log, counters and the grid of every port. Its URL, with a token, is printed at start; --ports is then optional (start from the page).", valueName: "ADDR:PORT"),
            transform: SocketAddress.parse)
    var dashboard: SocketAddress?

    // A worker process of a listen too large for one process: its assignment on stdin, reports on stdout.
    @Flag(name: .long, help: .hidden)
    var worker = false

    func validate() throws {
        if worker { return }
        guard ports != nil || dashboard != nil else { throw ValidationError(ListenForm.missingPorts) }
        if let dashboard, selfTest {
            throw ValidationError("--self-test and --dashboard \(dashboard) exclude each other: start the listen from the page, then sweep it")
        }
        guard maxConnections >= 1 else { throw ValidationError("invalid --max-connections '\(maxConnections)': must be at least 1") }
        guard maxPerPort >= 1 else { throw ValidationError("invalid --max-per-port '\(maxPerPort)': must be at least 1") }
        for (name, value) in [("--idle-timeout", idleTimeout.value), ("--request-timeout", requestTimeout.value)] {
            guard value <= 86_400 else {
                throw ValidationError("invalid \(name) '\(SweepCommand.text(value))': must be more than 0 seconds (and at most a day)")
            }
        }
        for (name, value) in [("--min-rate", minRate), ("--max-body", maxBody), ("--udp-reply-rate", udpReplyRate)] where value < 0 {
            throw ValidationError("invalid \(name) '\(value)': must be 0 or more")
        }
        guard maxQueued >= 1024 else { throw ValidationError("invalid --max-queued '\(maxQueued)': must be at least 1024 bytes") }
    }

    /// The command line's choice as the form's text: the page shows it, and starts again from it.
    var form: ListenForm {
        ListenForm(ports: ports.map { "\($0)" } ?? "", bind: "\(bind)",
                   protocols: protocols.tcpOnly ? "tcp" : protocols.udpOnly ? "udp" : "both", reply: reply.value.rawValue)
    }

    func configuration() throws -> ListenConfiguration {
        var connections = ConnectionLimits()
        connections.maxConnections = maxConnections
        connections.maxPerPort = maxPerPort
        connections.idleTimeout = idleTimeout.duration
        connections.requestTimeout = requestTimeout.duration
        connections.minRate = minRate
        connections.maxQueuedBytes = maxQueued
        connections.maxBodyBytes = maxBody
        return ListenConfiguration(
            ports: ports ?? PortSet(), bind: bind, transports: protocols.transports, reply: reply.value,
            limits: ListenLimits(connections: connections, udp: UDPReplyPolicy(repliesPerSecond: udpReplyRate)))
    }

    func run() async throws {
        if worker { return try await runWorker() }
        if let dashboard { return try await runWithDashboard(on: dashboard) }
        let configuration = try configuration()
        let log = ListenLog(format: format, timestamps: !noTimestamps)
        let group = try LocalResources.loops()
        defer { group.shutdown() }
        // Armed before any listener or worker exists: a signal during start-up is handled once start-up is over
        // (everything closed, workers stopped), instead of ending this process and orphaning the workers.
        let signals = await SignalWatch.watch([SIGINT, SIGTERM], on: group.loops[0])
        defer { signals.stop() }
        let descriptors = DescriptorBudget.raise()
        let listen = Listen(configuration, group: group, descriptors: descriptors)
        let start = try await Self.start(listen, bind: configuration.bind, strict: strict)
        log.note("listening on " + ListenLog.describe(configuration, start: start, descriptors: descriptors))

        let stats = ListenStats(listening: configuration.ports.count)
        let status = !quiet && Terminal.stderrIsTerminal ? Task { await stats.showStatus() } : nil
        let test = selfTest ? Task { [target] in
            await selfTestReport(configuration, target: target, group: group, log: log)
        } : nil
        // The listen holds its ports until a signal; its events end when it has closed them.
        let lifecycle = Task {
            try await Lifecycle.run([listen], signals: signals) { signal in
                log.note("stopping (\(signal == SIGINT ? "SIGINT" : "SIGTERM"))")
            }
        }
        for await event in listen.events {
            stats.record(event)
            log.write(event)
            log.flush()  // the log is live: a line as each connection ends
        }
        _ = try await lifecycle.value
        test?.cancel()
        status?.cancel()
        await status?.value
        await summarize(listen, stats: stats, log: log)
    }

    /// --dashboard: the page starts and stops listens (this command's limits, the page's ports, bind, protocols
    /// and reply); the command ends on SIGINT or SIGTERM, with the summary of everything it served.
    private func runWithDashboard(on address: SocketAddress) async throws {
        let base = try configuration()
        let log = ListenLog(format: format, timestamps: !noTimestamps)
        let group = try LocalResources.loops()
        defer { group.shutdown() }
        let signals = await SignalWatch.watch([SIGINT, SIGTERM], on: group.loops[0])
        defer { signals.stop() }
        let board = ListenBoard()
        let stats = ListenStats(listening: 0)
        let session = ListenSession(base: base, group: group, descriptors: DescriptorBudget.raise(), log: log,
                                    stats: stats, board: board)
        let page: ListenDashboard
        do {
            page = try await ListenDashboard.start(board, control: session, on: address)
        } catch {
            Terminal.error("portsweep: cannot open the dashboard on \(address): \(error)\n")
            throw ExitCode(ExitStatus.localError)
        }
        // Printed even with --quiet: without it the page cannot be opened.
        Terminal.error("portsweep: dashboard at \(page.url)\n")
        if ports != nil, let reason = await session.start(form) {
            Terminal.error("portsweep: \(reason)\n")
            if strict { await page.stop(); throw ExitCode(ExitStatus.localError) }
        }
        let signal = try? await signals.next()
        log.note("stopping (\(signal == SIGINT ? "SIGINT" : "SIGTERM"))")
        let counters = await session.finish()
        await page.stop()
        log.summary(stats, counters: counters)
        log.flush()
        if !quiet { Terminal.error(stats.summary(counters) + "\n") }
    }

    /// The summary: a record in the log (text or JSON) and, unless --quiet, a line on stderr.
    private func summarize(_ listen: Listen, stats: ListenStats, log: ListenLog) async {
        let counters = await listen.counters()
        log.summary(stats, counters: counters)
        log.flush()
        if !quiet { Terminal.error(stats.summary(counters) + "\n") }
    }

    /// Opens the listeners; a listen that holds nothing (or, with --strict, not everything) is a local error.
    private static func start(_ listen: Listen, bind: IPAddress, strict: Bool) async throws -> ListenStart {
        let start: ListenStart
        do {
            start = try await listen.start()
        } catch {
            Terminal.error("portsweep: cannot listen: \(error)\n")
            if error.isDescriptorShortage { Terminal.error("portsweep: \(LocalResources.descriptorLimit())\n") }
            throw ExitCode(ExitStatus.localError)
        }
        if !start.failures.isEmpty { Terminal.error(ListenLog.explain(start.failures, bind: bind)) }
        guard start.held == 0 || (strict && !start.failures.isEmpty) else { return start }
        await listen.stop()
        for await _ in listen.events {}
        if start.held == 0 && start.failures.contains(where: { $0.errno == EMFILE || $0.errno == ENFILE }) {
            Terminal.error("portsweep: \(LocalResources.descriptorLimit())\n")
        }
        throw ExitCode(ExitStatus.localError)
    }

    private func selfTestReport(_ configuration: ListenConfiguration, target: IPAddress, group: EventLoopGroup,
                                log: ListenLog) async {
        let results = await SelfTest(ports: configuration.ports, transports: configuration.transports,
                                     reply: configuration.reply, target: target).run(on: group)
        guard !Task.isCancelled else { return }  // stopped before the self-test finished
        var renderer = ResultRenderer(options: RenderOptions(showProtocol: true, detailed: true,
                                                             bothProtocols: configuration.transports.count == 2))
        var lines: [String] = []
        for result in results { lines += renderer.add(result) }
        lines += renderer.finish()
        let passed = results.filter(\.outcome.isPass).count
        log.note("self-test through \(target): \(passed) of \(results.count) passed")
        for line in lines { log.note("self-test: " + line) }
    }

    /// A worker: the parent gives its assignment on stdin and reads its reports on stdout; it stops on SIGTERM
    /// or when the parent is gone (stdin ends).
    private func runWorker() async throws {
        let group = try LocalResources.loops()
        defer { group.shutdown() }
        let signals = await SignalWatch.watch([SIGINT, SIGTERM], on: group.loops[0])
        defer { signals.stop() }
        let status = await ListenWorker.run(group: group) { _ = try? await signals.next() }
        if status != 0 { throw ExitCode(status) }
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
    /// The values for shell completions too (the default is a file name for a type that is not CaseIterable).
    static var defaultCompletionKind: CompletionKind { .list(allValueStrings) }
    var defaultValueDescription: String { value.rawValue }
}

enum LogFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

/// The dashboard's listen: at most one at a time, started from a form and stopped from the page (or by the
/// command's end). Its events go to the log, the counters and the page, as a listen's without a page do.
actor ListenSession: ListenControl {
    private let base: ListenConfiguration
    private let group: EventLoopGroup
    private let descriptors: DescriptorBudget
    private let log: ListenLog
    private let stats: ListenStats
    private let board: ListenBoard
    private var current: (listen: Listen, pump: Task<Void, Never>)?
    private var counters = ListenCounters()

    init(base: ListenConfiguration, group: EventLoopGroup, descriptors: DescriptorBudget, log: ListenLog,
         stats: ListenStats, board: ListenBoard) {
        self.base = base
        self.group = group
        self.descriptors = descriptors
        self.log = log
        self.stats = stats
        self.board = board
    }

    func start(_ form: ListenForm) async -> String? {
        let choice: ListenForm.Choice
        do { choice = try form.validated() } catch { return error.description }
        if current != nil { return "already listening: stop first" }
        var configuration = base
        configuration.ports = choice.ports
        configuration.bind = choice.bind
        configuration.transports = choice.transports
        configuration.reply = choice.reply
        let listen = Listen(configuration, group: group, descriptors: descriptors)
        let start: ListenStart
        do {
            start = try await listen.start()
        } catch {
            let reason = "cannot listen: \(error)"
            board.failed(reason)
            return reason
        }
        let pump = Task { [log, stats, board] in
            for await event in listen.events {
                stats.record(event)
                board.record(event)
                log.write(event)
                log.flush()
            }
        }
        guard start.held > 0 else {
            await listen.stop()
            await pump.value
            let reason = ListenLog.explain(start.failures, bind: configuration.bind)
                .split(separator: "\n").first.map { String($0.dropFirst("portsweep: ".count)) } ?? "cannot listen"
            board.failed(reason, failures: start.failures)
            return reason
        }
        current = (listen, pump)
        let description = ListenLog.describe(configuration, start: start, descriptors: descriptors)
        if !start.failures.isEmpty { Terminal.error(ListenLog.explain(start.failures, bind: configuration.bind)) }
        note("listening on " + description)
        board.listening(form, configuration, failures: start.failures, description: description)
        return nil
    }

    func stop() async { _ = await finish() }

    /// A note in the log and on the page.
    private func note(_ text: String) {
        log.note(text)
        board.record(.note(text, time: WallClock.now))
    }

    /// Stops the listen, if any; returns the counters of every listen so far.
    func finish() async -> ListenCounters {
        if let (listen, pump) = current {
            current = nil
            let last = await listen.counters()
            await listen.stop()
            await pump.value
            counters = counters + last
            note("stopped")
            board.stopped()
        }
        return counters
    }
}
