import Foundation
import ArgumentParser
import Logging
import PortsweepDashboard
import PortsweepEngine
import PortsweepReport
import PortsweepSweep
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// `portsweep sweep`: the Incoming Port Tester, for a whole range at once.
struct SweepCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Listen on each port of a range, connect to it through --target, exchange a line each way (or, with --to, test the way out).",
        discussion: """
            Results, grouped over consecutive ports: [PASS] 8080-8085, [FAIL] 25. Outcome bits: PASS 0, \
            FAIL 1 (no connection in time), SEND 2 (the client's line did not reach the server), SUDO 4 (a port \
            below 1024 needs privilege), USED 8 (another process holds the port), RECV 16 (the server's reply \
            did not reach the client), ERRO 64 (anything else).
            Exit status: 0 every port passed, 1 some did not, 2 a local error stopped the sweep, 64 bad usage; \
            with --test-single-port, the outcome bits. SIGINT or SIGTERM stops a sweep short: every result \
            decided so far is printed, the summary says how many ports were left untested, and the status is 130 \
            (SIGINT) or 143 (SIGTERM); a second signal ends it at once.
            Outbound (--to HOST, with 'portsweep listen --reply echo' holding the ports on HOST): PASS the line \
            came back; FAIL no connection (refused, dropped or unreachable); RECV connected and sent, no echo \
            (from this side a lost line and a lost echo look the same); SEND (UDP) an ICMP error came back; \
            USED something other than portsweep answered on that port there.
            """)

    @Option(name: .long, help: ArgumentHelp("Ports: 8080, 1-16384, 22,80,8000-8100, or - for 1-65535 (default 1-16384).", valueName: "RANGE"),
            transform: PortSet.parse)
    var ports: PortSet?

    @Option(name: .customLong("target"), help: ArgumentHelp("Where the client connects: this machine as the outside sees it, an IPv4 or IPv6 address or a host name. (default: 127.0.0.1)", valueName: "HOST"),
            transform: HostArgument.parse)
    var targetOption: HostArgument?

    @Option(name: .customLong("to"), help: ArgumentHelp("Sweep outbound instead: connect (TCP) and send (UDP) to HOST on each port, where 'portsweep listen --reply echo' holds the ports; no listener here. An address or a host name.", valueName: "HOST"),
            transform: HostArgument.parse)
    var to: HostArgument?

    @Option(name: .customLong("via"), help: ArgumentHelp("Sweep inbound through a remote checker ('portsweep serve' outside your network): it connects back to this machine's address as it sees it, on each port, while listeners here say what reached them.", valueName: "URL"),
            transform: CheckerURL.parse)
    var via: CheckerURL?

    @Option(name: .long, help: ArgumentHelp("The key of a checker that requires one (--via). (default: $PORTSWEEP_API_KEY)", valueName: "KEY"))
    var apiKey: String?

    @OptionGroup var pacing: PacingOptions

    @Option(name: .long, help: ArgumentHelp("Skip the ports whose verdict is in FILE (an earlier run's JSON Lines) and append every new verdict to it; the output is the whole range's.", valueName: "FILE"))
    var resume: String?

    /// `--ipv4` / `--ipv6` rather than `-4` / `-6`, which would read as negative values.
    @Flag
    var family: AddressFamilyFlag?

    /// Where the client connects: --to's host outbound, --target's inbound (default this machine, of --ipv6's family).
    var target: HostArgument {
        to ?? via?.host ?? targetOption ?? .address(family == .ipv6 || bind?.family == .v6 ? .loopbackV6 : .loopbackV4)
    }

    /// The family a host name resolves in: the flag's, else --bind's.
    var resolveFamily: IPAddress.Family? { family?.family ?? bind?.family }

    @Option(name: .long, help: ArgumentHelp("Address the listeners bind (default 0.0.0.0, or :: for an IPv6 target).", valueName: "ADDR"),
            transform: IPAddress.parse)
    var bind: IPAddress?

    @Option(name: .long, help: ArgumentHelp("Deadline of each step of a port's test, in seconds (fractions allowed). (default: 3)", valueName: "SECONDS"),
            transform: Seconds.parse)
    var timeout = Seconds(3)

    @Option(name: .long, help: ArgumentHelp("UDP: how many times the client's line is resent within a step.", valueName: "N"))
    var retries: Int = 2

    @OptionGroup var protocols: TransportOptions

    @Flag(name: .long, help: "One line per port instead of groups of consecutive ports.")
    var noGroup = false

    @Flag(name: .long, help: "Print the protocol on every line, even when only one was tested.")
    var alwaysPrintProtocol = false

    @Flag(name: .long, help: "Print the numeric outcome instead of the word.")
    var errorCodes = false

    @Option(name: .long, help: ArgumentHelp("Accepted for compatibility with the Incoming Port Tester; not used.", valueName: "PATH"))
    var netcatPath: String?

    @Option(name: .long, help: ArgumentHelp("Test one port, print nothing; the exit status is its outcome bits.", valueName: "PORT"))
    var testSinglePort: String?

    @Option(name: .long, help: ArgumentHelp("Ports in flight over all loops, per protocol (default 256 TCP and 512 UDP per loop, cut to fit the descriptor limit).", valueName: "N"))
    var concurrency: Int?

    @Option(name: .long, help: ArgumentHelp("Hold the sweep against a policy: a rule 'PROTOCOLS PORTS WORD' ('tcp 80,443 pass', 'tcp,udp 1-79 blocked'; words pass, blocked, any, FAIL, SEND, RECV, SUDO, USED, ERRO), or a YAML file of such rules (repeatable; the first rule naming a port decides). Only deviations are printed; exit 0 when reality matches, 1 when not. Without --ports, the ports the policy names are tested.", valueName: "RULE|FILE"))
    var expect: [String] = []

    @Option(name: .long, help: "Output format: text, json (JSON Lines), csv, html (one self-contained page: the grid of every port, the groups as a table; written when the sweep ends), junit (JUnit XML: a test case per policy rule, or per group of ports).")
    var format: OutputFormatArgument = .text

    @Option(name: .long, help: ArgumentHelp("Serve a live page of the sweep (progress, the grid of every port, downloads) on ADDR:PORT, 127.0.0.1:9900 when no value follows. Its URL, with a token, is printed at start; the page stays up after the sweep until Ctrl-C, and the exit status is then the sweep's.", valueName: "ADDR:PORT"),
            transform: SocketAddress.parse)
    var dashboard: SocketAddress?

    // For tests of running out of descriptors mid-sweep: plan as if the limit were this high.
    @Option(name: .long, help: .hidden)
    var assumeDescriptorLimit: Int?

    @Flag(name: [.short, .long], help: "No warnings, progress or summary: only the results.")
    var quiet = false

    @Flag(name: [.short, .long], help: "Also print the plan (window, loops, descriptor limit) and the errno behind each verdict.")
    var verbose = false

    /// --expect's rules, in order: a value naming an existing file is read as YAML, any other is one rule.
    func policy() throws -> Policy? {
        guard !expect.isEmpty else { return nil }
        var rules: [PolicyRule] = []
        do {
            for value in expect {
                if FileManager.default.fileExists(atPath: value) {
                    guard let text = FileManager.default.contents(atPath: value).map({ String(decoding: $0, as: UTF8.self) }) else {
                        throw Policy.Invalid("cannot read the policy \(value)")
                    }
                    rules += try Policy.parse(yaml: text, file: value)
                } else {
                    rules.append(try PolicyRule(parsing: value))
                }
            }
        } catch let error as Policy.Invalid {
            throw ValidationError(error.description)
        }
        return Policy(rules: rules)
    }

    /// The protocols to test: --tcp-only/--udp-only, else those a policy names, else both.
    func transports(_ policy: Policy?) -> Set<Transport> {
        if protocols.tcpOnly || protocols.udpOnly { return protocols.transports }
        return policy.map { Set($0.transports) } ?? protocols.transports
    }

    /// The ports to test, from --ports, --test-single-port or the policy.
    func portSet(_ policy: Policy? = nil) throws -> PortSet {
        guard let single = testSinglePort else {
            if let ports { return ports }
            guard let policy else { return PortSet(range: 1...16384) }
            var named = PortSet()
            for transport in transports(policy) { for port in policy.ports(transport) { named.insert(port) } }
            return named
        }
        if let ports {
            throw ValidationError("--test-single-port \(single) and --ports \(ports) exclude each other: test one port, or a range")
        }
        guard let port = Int(single), (1...65535).contains(port) else {
            throw ValidationError("invalid --test-single-port '\(single)': must be a port number from 1 to 65535")
        }
        return PortSet([UInt16(port)])
    }

    func validate() throws {
        let policy = try policy()
        _ = try portSet(policy)
        if policy != nil {
            if testSinglePort != nil { throw ValidationError("--expect holds a range to a policy: it has no use with --test-single-port") }
            if format.value == .html { throw ValidationError("--expect prints the deviations: use it with --format text, json, csv or junit") }
            if let policy, try portSet(policy).isEmpty {
                throw ValidationError("--expect names no port of the protocols tested (\(protocols.tcpOnly ? "TCP" : "UDP") only)")
            }
        }
        if let to {
            if let targetOption { throw ValidationError("--to \(to) and --target \(targetOption) exclude each other: sweep outbound to a remote listener, or inbound through a target") }
            if let bind { throw ValidationError("--bind \(bind) has no use with --to: an outbound sweep holds no listener") }
        }
        if let via {
            if let to { throw ValidationError("--via \(via) and --to \(to) exclude each other: sweep inbound through a checker, or outbound to a listener") }
            if let targetOption { throw ValidationError("--via \(via) and --target \(targetOption) exclude each other: the checker probes the address it sees you at") }
        }
        if apiKey != nil && via == nil { throw ValidationError("--api-key is for a checker: use it with --via") }
        if let bind, let address = target.address, bind.family != address.family {
            throw ValidationError("--bind \(bind) and --target \(target) must be of the same IP family")
        }
        if let family {
            if let bind, bind.family != family.family {
                throw ValidationError("--\(family) and --bind \(bind) disagree: \(bind) is an \(bind.family == .v4 ? "IPv4" : "IPv6") address")
            }
            if let address = target.address, address.family != family.family {
                throw ValidationError("--\(family) and \(targetOptionName) \(target) disagree: \(target) is an \(address.family == .v4 ? "IPv4" : "IPv6") address")
            }
        }
        guard timeout.value <= 3600 else {
            throw ValidationError("invalid --timeout '\(SweepCommand.text(timeout.value))': must be more than 0 and at most 3600 seconds")
        }
        if retries < 0 || retries > 100 {
            throw ValidationError("invalid --retries '\(retries)': must be from 0 to 100")
        }
        if let dashboard, testSinglePort != nil {
            throw ValidationError("--dashboard \(dashboard) shows a range: it has no use with --test-single-port")
        }
        if let concurrency, concurrency < 1 {
            throw ValidationError("invalid --concurrency '\(concurrency)': must be at least 1")
        }
    }

    func run() async throws {
        let singlePort = testSinglePort != nil
        let chatty = !quiet && !singlePort
        let logger = Self.logger(verbose: verbose && chatty)
        let resumeFile = try openResumeFile()
        let group = try LocalResources.loops()
        defer { group.shutdown() }
        let targetAddress = try await resolveTarget(on: group.loops[0])
        if chatty && to == nil && via == nil && targetAddress.isLocalhost {
            Terminal.error("WARNING: Target is localhost. All tests should succeed.\n")
            Terminal.error("WARNING: To test external connectivity, use your external IP address with --target\n")
        }
        if case .name(let name) = target { logger.info("\(targetOptionName) \(name) is \(targetAddress)") }
        var configuration = try configuration(target: targetAddress, known: resumeFile?.known ?? [])
        if to != nil { await askFarListener(&configuration, on: group.loops[0], chatty: chatty) }
        if chatty, case .random(let seed) = configuration.order { Terminal.error("portsweep: --order random --seed \(seed)\n") }
        // Armed before the first port starts: a signal stops the sweep short and keeps what it found.
        let signals = await SignalWatch.watch([SIGINT, SIGTERM], on: group.loops[0])
        defer { signals.stop() }
        let sweep = try makeSweep(configuration, on: group)
        let page = try await startDashboard(sweep, configuration)
        logger.info("\(Self.describe(configuration, timeout: timeout.value))")
        logger.info("\(sweep.plan)")

        let progress = chatty && Terminal.stderrIsTerminal ? ProgressBar(sweep: sweep) : nil
        let progressTask = progress.map { bar in Task { await bar.run() } }
        let policy = try policy()
        let output = SweepOutput(renderer: renderer(bothProtocols: configuration.transports.count == 2),
                                 singlePort: singlePort, resume: resumeFile,
                                 report: format.value == .html ? htmlReport(configuration) : nil,
                                 check: policy.map { PolicyCheck(policy: $0, format: format.value) },
                                 junit: format.value == .junit ? JUnitReport(name: htmlReport(configuration).title, timestamp: Self.now()) : nil)
        // The sweep runs as a service; a signal interrupts it and every result it had is still written.
        page?.board.begin()
        let signal = try await Lifecycle.run([SweepService(sweep) { await output.consume($0) }], signals: signals)
        progressTask?.cancel()
        await progressTask?.value

        if let failure = output.failure {
            output.writeReport(summary: "The sweep stopped early (\(failure)); the results it had are below.")
            output.writeJUnit(seconds: 0)
            page?.board.finish(.failed, summary: "The sweep stopped early (\(failure)).", exitStatus: ExitStatus.localError)
            await page?.stop()
            try Self.stop(on: failure)
        }
        guard let summary = sweep.summary else { throw ExitCode(ExitStatus.localError) }
        let summaryText = Self.summaryText(summary, of: configuration, signal: signal)
        if chatty || (signal != nil && !quiet) { Terminal.error("portsweep: \(summaryText)\n") }
        output.writeReport(summary: summaryText)
        output.writeJUnit(seconds: Self.seconds(summary.elapsed))
        if let check = output.check, chatty || (signal != nil && !quiet) { Terminal.error("portsweep: \(check.summary)\n") }
        if let resumeFile, let errno = resumeFile.writeFailure {
            await page?.stop()
            try Self.stop(on: ResumeFile.Failure.cannotWrite(path: resumeFile.path, errno: errno))
        }
        let status: Int32
        if summary.interrupted {
            status = signal == SIGTERM ? ExitStatus.terminated : ExitStatus.interrupted
        } else if singlePort {
            status = Int32(output.singleOutcome.rawValue)
        } else {
            let passed = output.check.map { $0.deviated == 0 } ?? summary.allPassed
            status = passed ? ExitStatus.allPassed : ExitStatus.someFailed
        }
        if let page {
            page.board.finish(summary.interrupted ? .interrupted : .done, summary: summaryText, exitStatus: status)
            // A sweep that ran to its end leaves its page up for whoever watches it, until they are done with
            // it: the status is still the sweep's, not the signal's. A stopped one has been stopped already.
            if !summary.interrupted {
                if !quiet { Terminal.error("portsweep: the dashboard stays up at \(page.url) until Ctrl-C\n") }
                _ = try? await signals.next()
            }
            await page.stop()
        }
        if status != 0 { throw ExitCode(status) }
    }

    /// --dashboard: the page's loop and server, before the first port starts (its address in use is a local
    /// problem, exit 2, before anything was swept).
    private func startDashboard(_ sweep: Sweep, _ configuration: SweepConfiguration) async throws -> SweepDashboard? {
        guard let dashboard else { return nil }
        let board = SweepBoard(title: htmlReport(configuration).title, transports: configuration.orderedTransports) {
            let deadline = sweep.lastDeadline, now = ShardProgress.now
            return SweepProgress(completed: sweep.completed, total: sweep.total,
                                 protocols: configuration.transports.count,
                                 deadlineLeft: deadline > now ? Double(deadline - now) / 1000 : 0)
        }
        do {
            let page = try await SweepDashboard.start(board, on: dashboard)
            sweep.watch { board.add($0) }
            // Printed even with --quiet: without it the page cannot be opened.
            Terminal.error("portsweep: dashboard at \(page.url)\n")
            return page
        } catch {
            Terminal.error("portsweep: cannot open the dashboard on \(dashboard): \(error)\n")
            throw ExitCode(ExitStatus.localError)
        }
    }

    /// --to: ports the far listener does not hold are decided from its roster (its own reasons) and not tested;
    /// without a roster, a refusal may be a port it does not hold, and the user is told so.
    private func askFarListener(_ configuration: inout SweepConfiguration, on loop: EventLoop, chatty: Bool) async {
        let candidates = FarListener.candidates(configuration.ports)
        guard let roster = await FarListener.ask(configuration.target, ports: candidates, timeout: timeout.duration,
                                                 on: loop) else {
            if chatty {
                Terminal.error("portsweep: the listener on \(configuration.target) did not say which ports it holds (asked on TCP "
                               + "\(PortSet(candidates))); a port it does not hold reads as FAIL (TCP) or SEND (UDP) below\n")
            }
            return
        }
        let unheld = configuration.unheld(by: roster)
        configuration.known += unheld
        guard chatty, !unheld.isEmpty else { return }
        for transport in configuration.orderedTransports {
            let ports = PortSet(unheld.lazy.filter { $0.transport == transport }.map(\.port))
            if !ports.isEmpty {
                Terminal.error("portsweep: the listener on \(configuration.target) does not hold \(transport.rawValue) \(ports): "
                               + "not tested, reported with its reason (USED, SUDO, ERRO), not as blocked\n")
            }
        }
    }

    private var targetOptionName: String { to != nil ? "--to" : via != nil ? "--via" : "--target" }

    private static func describe(_ configuration: SweepConfiguration, timeout: Double) -> String {
        let what = "sweeping \(configuration.ports.count) port\(configuration.ports.count == 1 ? "" : "s") (\(configuration.orderedTransports.map(\.rawValue).joined(separator: "+")))"
        let how = configuration.via.map { "inbound through the checker at \($0.url) (listeners on \(configuration.bindAddress))" }
            ?? (configuration.direction.isOutbound
                ? "outbound to \(configuration.target)" : "of \(configuration.target) (listeners on \(configuration.bindAddress))")
        let pace = configuration.rate.map { ", at most \(SweepCommand.text($0)) ports/s" } ?? ""
        return "\(what) \(how), timeout \(SweepCommand.text(timeout)) s per step\(pace)"
    }

    /// --resume's file: one that is not an earlier sweep's results is bad usage (64), one that cannot be opened
    /// a local error (2).
    private func openResumeFile() throws -> ResumeFile? {
        guard let resume else { return nil }
        do {
            return try ResumeFile(path: resume)
        } catch {
            Terminal.error("portsweep: \(error)\n")
            if case .notResults = error { throw ExitCode(ExitStatus.usage) }
            throw ExitCode(ExitStatus.localError)
        }
    }

    private static func logger(verbose: Bool) -> Logger {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var logger = Logger(label: "portsweep")
        logger.logLevel = verbose ? .info : .warning
        return logger
    }

    /// A name that has no address is bad input (64); a resolver this machine cannot reach is a local error (2).
    private func resolveTarget(on loop: EventLoop) async throws -> IPAddress {
        do {
            return try await target.resolve(family: resolveFamily, on: loop)
        } catch let failure as Resolver.Failure {
            Terminal.error("portsweep: \(targetOptionName) \(failure)\n")
            throw ExitCode(failure.isLocal ? ExitStatus.localError : ExitStatus.usage)
        } catch let wrong as HostArgument.WrongFamily {
            let asked = family.map { "--\($0) was given" } ?? "--bind \(bind.map { "\($0)" } ?? "") is of the other family"
            Terminal.error("portsweep: \(targetOptionName) \(wrong); \(asked)\n")
            throw ExitCode(ExitStatus.usage)
        } catch {
            Terminal.error("portsweep: \(targetOptionName): cannot resolve '\(target)': \(error)\n")
            throw ExitCode(ExitStatus.localError)
        }
    }

    private func configuration(target: IPAddress, known: [PortResult]) throws -> SweepConfiguration {
        let policy = try policy()
        var configuration = SweepConfiguration(ports: try portSet(policy), target: target, bind: bind, timeout: timeout.duration,
                                               concurrency: concurrency, transports: transports(policy), retries: retries)
        if to != nil { configuration.direction = .echo(SweepDirection.outboundLine(token: SweepDirection.randomToken())) }
        if let via {
            configuration.via = Checker(url: via.text, address: SocketAddress(target, port: via.port), host: via.hostHeader,
                                        token: SweepDirection.randomToken(),
                                        apiKey: apiKey ?? ProcessInfo.processInfo.environment["PORTSWEEP_API_KEY"])
        }
        configuration.rate = pacing.rate
        configuration.order = pacing.portOrder()
        configuration.known = known
        return configuration
    }

    /// The command raises the descriptor limit (the library never changes process state) and tells the sweep.
    private func makeSweep(_ configuration: SweepConfiguration, on group: EventLoopGroup) throws -> Sweep {
        do {
            var budget = DescriptorBudget.raise()
            if let assumed = assumeDescriptorLimit {
                budget = DescriptorBudget(soft: assumed, hard: assumed, inUse: budget.inUse)
            }
            return try Sweep(configuration, group: group, budget: budget)
        } catch {
            Terminal.error("portsweep: \(error)\n")
            throw ExitCode(ExitStatus.localError)
        }
    }

    private func renderer(bothProtocols: Bool) -> ResultRenderer {
        ResultRenderer(options: RenderOptions(format: format.value, grouped: !noGroup, showProtocol: alwaysPrintProtocol,
                                              errorCodes: errorCodes, detailed: verbose, bothProtocols: bothProtocols))
    }

    /// A local problem stopped the sweep: say what, and for a descriptor shortage, the limit.
    private static func stop(on failure: any Error) throws -> Never {
        Terminal.error("portsweep: \(failure)\n")
        if case SweepError.local(let local) = failure, local.isDescriptorShortage {
            Terminal.error("portsweep: \(LocalResources.descriptorLimit())\n")
        }
        throw ExitCode(ExitStatus.localError)
    }

    private static func summaryText(_ summary: SweepSummary, of configuration: SweepConfiguration, signal: Int32?) -> String {
        let seconds = Double(summary.elapsed.components.seconds) + Double(summary.elapsed.components.attoseconds) / 1e18
        let interruption = summary.interrupted
            ? (signal: signal == SIGTERM ? "SIGTERM" : "SIGINT", untested: summary.untested) : nil
        return SummaryText.line(counts: summary.counts, total: summary.total, seconds: seconds, retried: summary.retried,
                                protocols: configuration.transports.count, interrupted: interruption)
    }

    /// --format html: titled with what was swept, dated now.
    private func htmlReport(_ configuration: SweepConfiguration) -> HTMLReport {
        let through = to.map { " to \($0)" } ?? via.map { " via \($0)" } ?? " through \(configuration.target)"
        let date = Date().formatted(Date.ISO8601FormatStyle(dateSeparator: .dash, dateTimeSeparator: .space, timeZone: .gmt))
        return HTMLReport(title: "portsweep: \(PortSet(configuration.ports)) \(configuration.orderedTransports.map(\.rawValue).joined(separator: "/"))\(through)",
                          transports: configuration.orderedTransports, generated: "Swept \(date)")
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func now() -> String {
        Date().formatted(Date.ISO8601FormatStyle(timeZone: .gmt))
    }

    static func text(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : "\(value)"
    }
}

/// `--format`'s values.
struct OutputFormatArgument: ExpressibleByArgument {
    let value: OutputFormat
    static let text = OutputFormatArgument(value: .text)

    init(value: OutputFormat) { self.value = value }

    init?(argument: String) {
        guard let value = OutputFormat(rawValue: argument.lowercased()) else { return nil }
        self.value = value
    }

    static var allValueStrings: [String] { OutputFormat.allCases.map(\.rawValue) }
    static var defaultCompletionKind: CompletionKind { .list(allValueStrings) }
    var defaultValueDescription: String { value.rawValue }
}

/// Where a sweep's results go as they come: rendered to stdout (or, for --test-single-port, folded into one
/// outcome). Used by one task at a time: the sweep service's, then the command's once the service has ended.
final class SweepOutput: @unchecked Sendable {
    private var renderer: ResultRenderer
    private let singlePort: Bool
    private let resume: ResumeFile?
    private let out = OutputBuffer()
    private(set) var singleOutcome = Outcome.pass
    private(set) var failure: (any Error)?

    private var report: HTMLReport?
    /// --expect: the results held against the policy (only deviations are printed).
    private(set) var check: PolicyCheck?
    private var junit: JUnitReport?

    init(renderer: ResultRenderer, singlePort: Bool, resume: ResumeFile? = nil, report: HTMLReport? = nil,
         check: PolicyCheck? = nil, junit: JUnitReport? = nil) {
        self.report = report
        self.check = check
        self.junit = junit
        self.renderer = renderer
        self.resume = resume
        self.singlePort = singlePort
    }

    func consume(_ results: SweepResults) async {
        do {
            if junit == nil && report == nil { out.write(check?.header ?? (singlePort ? [] : renderer.header())) }
            for try await result in results {
                resume?.add(result)
                if singlePort { singleOutcome.formUnion(result.outcome) }
                if report != nil {
                    report?.add(result)
                } else if junit != nil {
                    junit?.add(result)
                    _ = check?.add(result)
                } else if check != nil {
                    out.write(check!.add(result))
                } else if !singlePort {
                    out.write(renderer.add(result))
                }
            }
        } catch {
            failure = error
        }
        resume?.flush()
        if check != nil {
            let lines = check!.finish()
            if junit == nil { out.write(lines) }
        } else if !singlePort && report == nil && junit == nil {
            out.write(renderer.finish())
        }
        out.flush()
    }

    /// --format junit: the whole document, once the sweep has ended (an interrupted one's too).
    func writeJUnit(seconds: Double) {
        guard var junit else { return }
        junit.seconds = seconds
        out.write([junit.document(policy: check)])
        out.flush()
    }

    /// --format html: the whole document, once the summary is known (an interrupted sweep's too).
    func writeReport(summary: String) {
        guard var report else { return }
        report.summary = summary
        out.write([report.document])
        out.flush()
    }
}

/// Buffers stdout lines and writes them in large chunks (or line by line to a terminal), below any status line.
final class OutputBuffer {
    private var pending = ""
    /// On a terminal a person is watching: each result line as soon as it is known. Into a pipe or a file:
    /// in large writes.
    private let live = Terminal.stdoutIsTerminal

    func write(_ lines: [String]) {
        for line in lines {
            pending += line
            pending += "\n"
        }
        if live || pending.utf8.count > 1 << 16 { flush() }
    }

    func flush() {
        guard !pending.isEmpty else { return }
        StatusLine.shared.out(pending)
        pending = ""
    }
}
