import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real redis-server (Debian's) for a test: on 127.0.0.1 and a port nobody held a moment ago, nothing saved,
/// stopped (SIGKILL) by `stop()`. Spawned with posix_spawn (Foundation's Process over-reads /proc/self/fd).
final class RedisServer: @unchecked Sendable {
    static let binary = "/usr/bin/redis-server"
    static var available: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    let port: Int
    let extra: [String]
    private(set) var pid: pid_t = 0

    init(port: Int? = nil, extra: [String] = []) throws {
        self.port = try port ?? RedisServer.freePort()
        self.extra = extra
        try start()
    }

    deinit { stop() }

    /// A port the kernel hands out for bind(0), released again (redis cannot be told to pick one and say which).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Starts (again, after `stop()`) on the same port; returns once it accepts connections (at most 10 s).
    func start() throws {
        let arguments = [RedisServer.binary, "--port", "\(port)", "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", "--logfile", "/dev/null"] + extra
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        guard posix_spawn(&pid, RedisServer.binary, &actions, nil, argv, environ) == 0 else { throw POSIXError(.ENOEXEC) }
        let deadline = Date().addingTimeInterval(10)
        while !accepts() {
            guard Date() < deadline else { stop(); throw POSIXError(.ETIMEDOUT) }
            usleep(10_000)
        }
    }

    /// Whether a TCP connect to the port succeeds now.
    func accepts() -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    func signal(_ signal: Int32) { if pid > 0 { kill(pid, signal) } }

    func stop() {
        guard pid > 0 else { return }
        kill(pid, SIGCONT)
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        pid = 0
    }
}
