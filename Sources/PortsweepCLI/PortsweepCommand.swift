public import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// `portsweep`: the root command.
public struct PortsweepCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "portsweep",
        abstract: "Know, in seconds and for every port, what gets through a firewall.",
        discussion: """
            Exit status of a sweep: 0 every port passed, 1 some did not, 2 a local error stopped it, \
            64 bad usage, 130/143 stopped short by SIGINT/SIGTERM (every result so far printed). With --test-single-port the status is the port's outcome bits \
            (PASS 0, FAIL 1, SEND 2, SUDO 4, USED 8, RECV 16, ERRO 64).
            """,
        version: "0.1.0",
        subcommands: [SweepCommand.self, ListenCommand.self, ServeCommand.self],
        defaultSubcommand: nil)

    public init() {}

    /// Parses the arguments, runs the command, and exits with its status. Bad usage prints one line naming the
    /// bad value on stderr and exits 64; `--help` prints the help on stdout and exits 0.
    public static func runMain(_ arguments: [String] = Array(CommandLine.arguments.dropFirst())) async -> Never {
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot(joinNegativeValues(defaultOptionalValues(arguments)))
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            Glibc.exit(0)
        } catch let code as ExitCode {
            Glibc.exit(code.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                Terminal.out(fullMessage(for: error) + "\n")
                Glibc.exit(0)
            }
            let message = self.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            Terminal.error("portsweep: \(message)\n")
            Glibc.exit(code == .validationFailure ? ExitStatus.usage : code.rawValue)
        }
    }
}

extension PortsweepCommand {
    /// Descriptors any mode needs before its first socket: stdio, the runtime's own, and two per event loop.
    public static let minimumDescriptors = 32

    /// Exits 2 with one line naming RLIMIT_NOFILE when even the hard limit leaves fewer than
    /// `minimumDescriptors` (and raises the soft limit to the hard one when that is what it takes).
    public static func requireDescriptors() {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        guard limit.rlim_cur < rlim_t(minimumDescriptors) else { return }
        if limit.rlim_max >= rlim_t(minimumDescriptors) {
            limit.rlim_cur = rlim_t(minimumDescriptors)
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { return }
        }
        Terminal.error("portsweep: RLIMIT_NOFILE is \(limit.rlim_cur) (hard \(limit.rlim_max)): at least "
                       + "\(minimumDescriptors) descriptors are needed; raise it (ulimit -n) to run\n")
        Glibc.exit(ExitStatus.localError)
    }
}

/// `--timeout -1` would read `-1` as a short option; joined as `--timeout=-1` it reaches validation, which names
/// the bad value.
func joinNegativeValues(_ arguments: [String]) -> [String] {
    var out: [String] = []
    var i = 0
    while i < arguments.count {
        let arg = arguments[i]
        if arg.hasPrefix("--"), !arg.contains("="), i + 1 < arguments.count,
           let next = arguments[i + 1].dropFirst().first, arguments[i + 1].hasPrefix("-"), next.isNumber || next == "." {
            out.append(arg + "=" + arguments[i + 1])
            i += 2
            continue
        }
        out.append(arg)
        i += 1
    }
    return out
}

/// Options whose value may be left out, and the value they then take: `--dashboard` alone serves on
/// 127.0.0.1:9900. argument-parser has no option with an optional value, so a bare one gets its default here:
/// when nothing follows it, or another option does (no command of ours takes a positional argument).
let optionalValueDefaults = ["--dashboard": "127.0.0.1:9900"]

func defaultOptionalValues(_ arguments: [String]) -> [String] {
    var out: [String] = []
    for (i, arg) in arguments.enumerated() {
        if arg == "--" { return out + arguments[i...] }
        if let value = optionalValueDefaults[arg], i + 1 == arguments.count || arguments[i + 1].hasPrefix("-") {
            out.append(arg + "=" + value)
        } else {
            out.append(arg)
        }
    }
    return out
}

/// The documented exit statuses.
public enum ExitStatus {
    public static let allPassed: Int32 = 0
    public static let someFailed: Int32 = 1
    public static let localError: Int32 = 2
    public static let usage: Int32 = 64
    /// A sweep stopped short by SIGINT (128 + 2) or SIGTERM (128 + 15), as a shell reports a signal.
    public static let interrupted: Int32 = 130
    public static let terminated: Int32 = 143
}
