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
        let group = EventLoopGroup()
        defer { group.shutdown() }
        let listener = Listener(configuration, group: group)
        let log = ListenLog(format: format, timestamps: !noTimestamps)
        do {
            try await listener.start()
        } catch let error as ListenError {
            Terminal.error(ListenLog.explain(error, bind: configuration.bind))
            throw ExitCode(ExitStatus.localError)
        }
        let labels = configuration.transports.sorted().map(\.rawValue).joined(separator: " and ")
        log.note("listening on \(configuration.ports.count) \(labels) port\(configuration.ports.count == 1 ? "" : "s")"
                 + " of \(configuration.bind) (\(configuration.ports)), reply \(configuration.reply.rawValue)")

        let stats = ListenStats(listening: configuration.ports.count)
        let status = !quiet && Terminal.stderrIsTerminal ? Task { await stats.showStatus() } : nil
        let stopper = Task {
            let signal = try await group.loops[0].waitForSignal([SIGINT, SIGTERM])
            log.note("stopping (\(signal == SIGINT ? "SIGINT" : "SIGTERM"))")
            await listener.stop()
        }
        for await event in listener.events {
            stats.record(event)
            log.write(event)
            log.flush()  // the log is live: a line as each connection ends
        }
        stopper.cancel()
        status?.cancel()
        await status?.value
        log.flush()
        if !quiet { Terminal.error(stats.summary() + "\n") }
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
