import Foundation
import Testing

/// Every suite that runs the binary nests here, one after another: sweeps of 65535 ports and timing checks
/// each want the machine's two cores to themselves.
@Suite(.serialized) struct EndToEnd {}

/// Runs the built `portsweep` binary, optionally inside a fresh network namespace (`unshare -n`, loopback up)
/// and as an unprivileged user.
enum Portsweep {
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
        var lines: [String] { stdout.split(separator: "\n").map(String.init) }
        var errorLines: [String] { stderr.split(separator: "\n").map(String.init) }
    }

    /// The binary sits next to the test bundle in the build directory. PORTSWEEP_BINARY runs the tests against
    /// another build (an older one, to see a new test fail there).
    static var binary: String {
        if let other = ProcessInfo.processInfo.environment["PORTSWEEP_BINARY"], !other.isEmpty { return other }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        while dir.pathExtension == "xctest" || dir.lastPathComponent == "Contents" || dir.lastPathComponent == "MacOS" {
            dir.deleteLastPathComponent()
        }
        return dir.appendingPathComponent("portsweep").path
    }

    /// A copy of the binary that any user can run, wherever the build directory is (its parents may be private).
    static func publicCopy() throws -> String {
        // Named after the build, so runs share one copy per binary instead of leaving one per run.
        let attributes = try FileManager.default.attributesOfItem(atPath: binary)
        let stamp = Int((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)
        let path = NSTemporaryDirectory() + "portsweep-e2e-\(stamp)-\(attributes[.size] as? Int ?? 0)"
        if !FileManager.default.fileExists(atPath: path) {
            try? FileManager.default.removeItem(atPath: path + ".tmp")
            try FileManager.default.copyItem(atPath: binary, toPath: path + ".tmp")
            chmod(path + ".tmp", 0o755)
            rename(path + ".tmp", path)
        }
        return path
    }

    /// Runs a command to its end; returns its stdout.
    static func shell(_ command: [String]) throws -> String {
        let process = TestProcess()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        let out = Pipe()
        process.standardOutput = out
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// Shell commands for `run(setup:)`: another process holds these ports (TCP listeners, bound UDP sockets) on
    /// 0.0.0.0 until portsweep ends; portsweep starts only once they are held.
    static func holding(tcp: [UInt16], udp: [UInt16] = []) -> String {
        guard !tcp.isEmpty || !udp.isEmpty else { return "" }
        let ready = NSTemporaryDirectory() + "portsweep-holder-\(UUID().uuidString)"
        return """
            rm -f \(ready); mkfifo \(ready)
            /usr/bin/python3 -c '
            import socket, sys, time
            held = []
            for port in [\(tcp.map(String.init).joined(separator: ","))]:
                s = socket.socket(); s.bind(("0.0.0.0", port)); s.listen(8); held.append(s)
            for port in [\(udp.map(String.init).joined(separator: ","))]:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port)); held.append(s)
            open("\(ready)", "w").write("ready\\n")
            time.sleep(600)
            ' >/dev/null 2>&1 &
            holder=$!
            trap 'kill $holder 2>/dev/null || true' EXIT
            read line < \(ready)
            rm -f \(ready)
            """
    }

    static var isRoot: Bool { geteuid() == 0 }

    /// Whether this machine lets us make network namespaces (root with unshare and ip).
    static var canMakeNamespaces: Bool {
        isRoot && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare")
            && (FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") || FileManager.default.isExecutableFile(atPath: "/sbin/ip"))
    }

    /// Runs portsweep. `inNamespace`: in a fresh namespace of its own (`unshare -n`, gone when the process ends);
    /// `netns`: in a named one (`ip netns exec`). `setup`: shell commands run there first (a background helper
    /// it starts must set its own EXIT trap to be stopped when portsweep ends).
    /// `wrapper`: a command that runs portsweep (`prlimit --nofile=...`, say).
    static func run(_ arguments: [String], inNamespace: Bool = false, netns: String? = nil, setup: String = "",
                    asUser user: String? = nil, wrapper: [String] = [], timeout: Duration = .seconds(120)) throws -> Run {
        var command = wrapper + [binary] + arguments
        if let user {
            command[wrapper.count] = try publicCopy()
            command = ["/usr/bin/setpriv", "--reuid=\(user)", "--regid=\(user == "nobody" ? "nogroup" : user)", "--clear-groups"] + command
        }
        let script = "set -e; ip link set lo up; \(setup)\n\"$@\""
        if let netns {
            command = ["/usr/sbin/ip", "netns", "exec", netns, "sh", "-c", script, "sh"] + command
        } else if inNamespace {
            command = ["/usr/bin/unshare", "-n", "sh", "-c", script, "sh"] + command
        }
        let process = TestProcess()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Read both pipes to the end (concurrently, so neither fills up), then reap.
        let outData = Locked<Data>(Data()), errData = Locked<Data>(Data())
        let readers = DispatchGroup()
        for (pipe, sink) in [(out, outData), (err, errData)] {
            readers.enter()
            DispatchQueue.global().async {
                sink.value = pipe.fileHandleForReading.readDataToEndOfFile()
                readers.leave()
            }
        }
        let seconds = Double(timeout.components.seconds)
        if readers.wait(timeout: .now() + seconds) == .timedOut {
            process.terminate()
            Issue.record("portsweep \(arguments.joined(separator: " ")) did not finish within \(seconds) s")
            readers.wait()
        }
        process.waitUntilExit()
        return Run(status: process.terminationStatus,
                   stdout: String(decoding: outData.value, as: UTF8.self),
                   stderr: String(decoding: errData.value, as: UTF8.self))
    }
}

final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: T
    init(_ value: T) { _value = value }
    var value: T {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}

/// A listening socket this test holds, as "another process" would.
/// Ports for a test of the command where nothing else may touch them: as root, fixed ports in a fresh network
/// namespace of the run's own (other tests in parallel hammer this machine's loopback, and a "free" port can be
/// taken by one of them between the check and the sweep); otherwise ports free on this machine a moment ago,
/// the held ones held by this process.
final class QuietPorts {
    /// Nothing holds these.
    let free: [UInt16]
    /// Another process holds these with a TCP listener.
    let held: [UInt16]
    private let holders: [HeldPort]
    private let isolated = Portsweep.canMakeNamespaces

    /// `adjacent`: free and held ports form one run of consecutive numbers, free ones around the held ones
    /// (`free: 2, held: 1` gives P, P+1 held, P+2).
    init(free: Int, held: Int = 0, adjacent: Bool = false) throws {
        precondition(!adjacent || (free == 2 && held == 1), "adjacent: two free ports around one held")
        if isolated {
            let base: UInt16 = 40000
            if adjacent {
                (self.free, self.held) = ([base, base + 2], [base + 1])
            } else {
                self.free = (0..<free).map { base + UInt16($0) }
                self.held = (0..<held).map { base + 100 + UInt16($0) }
            }
            holders = []
        } else if adjacent {
            let holder = try HeldPort()
            (self.free, self.held, holders) = ([holder.port - 1, holder.port + 1], [holder.port], [holder])
        } else {
            holders = try (0..<held).map { _ in try HeldPort() }
            self.held = holders.map(\.port)
            self.free = try (0..<free).map { _ in try HeldPort.freePort() }
        }
    }

    func run(_ arguments: [String]) throws -> Portsweep.Run {
        isolated ? try Portsweep.run(arguments, inNamespace: true, setup: Portsweep.holding(tcp: held))
                 : try Portsweep.run(arguments)
    }

    func close() { for holder in holders { holder.close() } }
}

final class HeldPort {
    let fd: Int32
    let port: UInt16

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        try #require(ok)
        port = UInt16(bigEndian: addr.sin_port)
    }

    /// A port that was free a moment ago.
    static func freePort() throws -> UInt16 {
        let held = try HeldPort()
        defer { held.close() }
        return held.port
    }

    func close() { Glibc.close(fd) }
}
