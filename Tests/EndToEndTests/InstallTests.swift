import Foundation
import Testing

/// What `deploy/install` put in place (the README's test command runs it first; `PORTSWEEP_PREFIX` names another
/// prefix): a binary that needs no Swift toolchain, a man page and completions generated from the commands as they
/// are, and systemd units that systemd accepts. A missing install is a failure, not a skip: the install is what
/// these tests are about.
@Suite struct InstallTests {
    static let prefix = ProcessInfo.processInfo.environment["PORTSWEEP_PREFIX"] ?? "/usr/local"
    static let binary = "\(prefix)/bin/portsweep"

    static func installed(_ path: String) -> Bool {
        if FileManager.default.fileExists(atPath: path) { return true }
        Issue.record("\(path) is missing: run deploy/install (the README's test command does)")
        return false
    }

    /// The directory the test runner's own Swift runtime came from (the toolchain's), from /proc/self/maps.
    static func toolchainRuntimeDirectory() throws -> String {
        // (Foundation reads a /proc file by its size, which is 0.)
        let maps = try Portsweep.shell(["/bin/cat", "/proc/\(getpid())/maps"])
        let line = try #require(maps.split(separator: "\n").first { $0.hasSuffix("/libswiftCore.so") })
        let path = String(line[line.firstIndex(of: "/")!...])
        return URL(fileURLWithPath: path).deletingLastPathComponent().path
    }

    @Test func theInstalledBinaryRunsWithTheToolchainOutOfReach() throws {
        guard Self.installed(Self.binary) else { return }
        let ldd = try Portsweep.shell(["/usr/bin/ldd", Self.binary])
        #expect(!ldd.contains("libswift") && !ldd.contains("Foundation"), "\(ldd)")
        #expect(ldd.contains("libuv.so.1") && ldd.contains("libhttp_parser.so.2.9") && ldd.contains("libhiredis.so.0.14"), "\(ldd)")
        guard Portsweep.canMakeNamespaces else { return }
        // The toolchain's runtime directory hidden under an empty tmpfs, in a namespace with nothing but loopback.
        let runtime = try Self.toolchainRuntimeDirectory()
        let out = try Portsweep.shell(["/usr/bin/unshare", "-n", "-m", "/bin/sh", "-c", """
            mount -t tmpfs none \(runtime) && ip link set lo up || exit 99
            [ -e \(runtime)/libswiftCore.so ] && exit 98
            \(Self.binary) sweep --ports 1-1000 2>/dev/null; echo "rc=$?"
            \(Self.binary) --version
            """])
        #expect(out.hasPrefix("[PASS] TCP/UDP 1-1000\nrc=0\n"), "\(out)")
        let version = try Portsweep.shell([Portsweep.binary, "--version"])
        #expect(out.hasSuffix(version), "installed \(out), built \(version)")
    }

    /// The page is the commands' own help (every option of every subcommand), and man renders it.
    @Test func theManPageHasEveryOptionAndRenders() throws {
        let page = "\(Self.prefix)/share/man/man1/portsweep.1"
        guard Self.installed(page) else { return }
        let source = try String(contentsOfFile: page, encoding: .utf8)
        for subcommand in ["sweep", "listen", "serve"] {
            let help = try Portsweep.shell([Self.binary, subcommand, "--help"])
            // The option list's lines: '  --ports <RANGE>', '  -v, --verbose'.
            let options = help.split(separator: "\n").compactMap { line -> Substring? in
                let words = line.split(separator: " ")
                guard line.hasPrefix("  -"), let long = words.first(where: { $0.hasPrefix("--") }) else { return nil }
                return long.split(separator: ",").first
            }
            #expect(options.count > 5, "\(subcommand): \(help)")
            for option in options {
                // mdoc writes --ports as `Fl -ports`, -v, --verbose as `Fl v , -verbose`.
                #expect(source.contains("Fl -\(option.dropFirst(2))") || source.contains(", -\(option.dropFirst(2))"),
                        "man page lacks \(subcommand) \(option)")
            }
        }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/man") {
            let rendered = try Portsweep.shell(["/usr/bin/env", "MANWIDTH=100", "/usr/bin/man", "-P", "cat", "-l", page])
            // Without a terminal's locale grotty emboldens by overstriking (c BS c): keep what is printed last.
            let text = rendered.replacingOccurrences(of: ".\u{8}", with: "", options: .regularExpression)
            #expect(text.contains("Know, in seconds and for every port, what gets through a firewall.") && text.contains("ipv6"), "\(text.prefix(2000))")
        }
    }

    /// bash completes subcommands and options from the installed script; zsh's and fish's are in place.
    @Test func theCompletionsComplete() throws {
        let bash = "\(Self.prefix)/share/bash-completion/completions/portsweep"
        guard Self.installed(bash) else { return }
        func complete(_ words: [String]) throws -> String {
            let line = words.joined(separator: " ")
            let array = words.map { "'\($0)'" }.joined(separator: " ")
            return try Portsweep.shell(["/bin/bash", "-c", """
                shopt -s extglob; source \(bash)
                COMP_LINE="\(line)"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=(\(array)); COMP_CWORD=\(words.count - 1); COMPREPLY=()
                _portsweep portsweep '\(words.last!)' '\(words[words.count - 2])'
                printf '%s\\n' "${COMPREPLY[@]}"
                """])
        }
        #expect(try complete(["portsweep", "sw"]) == "sweep\n")
        #expect(try complete(["portsweep", "sweep", "--ip"]) == "--ipv4\n--ipv6\n")
        #expect(try complete(["portsweep", "listen", "--reply", ""]).split(separator: "\n") == ["http", "echo", "silent"])
        let zsh = try String(contentsOfFile: "\(Self.prefix)/share/zsh/site-functions/_portsweep", encoding: .utf8)
        #expect(zsh.hasPrefix("#compdef portsweep") && zsh.contains("--ipv6"))
        let fish = try String(contentsOfFile: "\(Self.prefix)/share/fish/vendor_completions.d/portsweep.fish", encoding: .utf8)
        #expect(fish.contains("complete -c 'portsweep'") && fish.contains("ipv6"))
    }

    /// systemd accepts both units as installed (its verify checks every directive and that ExecStart's binary is
    /// there; it prints a line for each it ignores), and their offline exposure stays what the README says.
    @Test(arguments: ["serve", "listen"])
    func theUnitsPassSystemdsChecks(_ mode: String) throws {
        let unit = "\(Self.prefix)/lib/systemd/system/portsweep-\(mode).service"
        guard Self.installed(unit) else { return }
        let text = try String(contentsOfFile: unit, encoding: .utf8)
        #expect(text.contains("ExecStart=\(Self.binary) \(mode) "), "\(text)")
        let verify = try Portsweep.shell(["/bin/sh", "-c", "systemd-analyze verify \(unit) 2>&1; echo rc=$?"])
        #expect(verify == "rc=0\n", "\(verify)")
        let security = try Portsweep.shell(["/bin/sh", "-c", "systemd-analyze security --offline=yes \(unit) 2>&1 | tail -1"])
        let score = security.split(separator: " ").compactMap { Double($0) }.first
        #expect(score != nil && score! <= 2.0, "\(security)")
    }

    /// What the units give a process, short of systemd itself (not PID 1 here): an unprivileged user, no new
    /// privileges, CAP_NET_BIND_SERVICE as the one ambient capability. Listen holds ports below 1024 with it,
    /// worker processes included, and stops cleanly on SIGTERM.
    @Test(.enabled(if: Portsweep.canMakeNamespaces, "needs root and unshare"))
    func theUnitsCapabilitySetHoldsPrivilegedPorts() throws {
        guard Self.installed(Self.binary) else { return }
        let out = try Portsweep.shell(["/usr/bin/unshare", "-n", "/bin/sh", "-c", """
            ip link set lo up || exit 99
            log=$(mktemp)
            setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs \\
                --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service --bounding-set=-all,+net_bind_service \\
                \(Self.binary) listen --no-timestamps --ports 1-1023 --reply echo >"$log" 2>&1 &
            pid=$!
            i=0; until grep -q '^listening' "$log"; do i=$((i+1)); [ $i -gt 200 ] && break; sleep 0.05; done
            echo "tcp=$(ss -Hltn | wc -l) udp=$(ss -Hlun | wc -l) uid=$(stat -c %u /proc/$pid)"
            kill -TERM $pid; wait $pid; echo "rc=$?"
            cat "$log"; rm -f "$log"
            """])
        #expect(out.hasPrefix("tcp=1023 udp=1023 uid=65534\nrc=0\nlistening on 1023 TCP and UDP ports of 0.0.0.0 (1-1023)"), "\(out)")
    }
}
