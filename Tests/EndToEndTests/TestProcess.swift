import Foundation
import Synchronization

/// The part of Foundation's `Process` the tests use, on `posix_spawn` directly.
///
/// Why not `Process`: on Linux its `run()` lists /proc/self/fd to close every descriptor in the child and copies
/// each `dirent`'s whole 256-byte `d_name`; a short record at the end of glibc's buffer makes that an over-read,
/// and the test process (thousands of sockets, dozens of concurrent children) crashed in it
/// (swift-corelibs-foundation #5472, fixed after 6.3.1). Here the child closes what it must not inherit with
/// glibc's `posix_spawn_file_actions_addclosefrom_np`, found at run time since the Glibc module does not export it.
final class TestProcess: @unchecked Sendable {
    enum Stream { case pipe(Pipe), handle(FileHandle) }

    var executableURL: URL?
    var arguments: [String] = []
    /// Each a `Pipe` or a `FileHandle`, as for `Process`; nil inherits the test process's own.
    var standardInput: Any?
    var standardOutput: Any?
    var standardError: Any?

    private enum State { case notStarted, running(pid_t), exited(status: Int32, signalled: Bool) }
    private let state = Mutex<State>(.notStarted)

    init() { TestProcess.ignoreSIGPIPE }

    /// Writing to a child that has gone (its stdin pipe), or to a socket a server closed, must fail the test that
    /// did it, not kill the whole run with SIGPIPE.
    private static let ignoreSIGPIPE: Void = { signal(SIGPIPE, SIG_IGN) }()

    var processIdentifier: Int32 {
        if case .running(let pid) = state.withLock({ $0 }) { return pid }
        return 0
    }

    func run() throws {
        guard let executableURL else { throw POSIXError(.ENOENT) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var childEnds: [FileHandle] = []
        for (target, stream) in [(Int32(0), standardInput), (1, standardOutput), (2, standardError)] {
            guard let fd = Self.descriptor(stream, forChildAs: target, childEnds: &childEnds) else { continue }
            // FileHandle.nullDevice has no descriptor of its own (-1).
            if fd < 0 {
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            } else {
                posix_spawn_file_actions_adddup2(&actions, fd, target)
            }
        }
        guard let closeFrom = Self.closeFrom, closeFrom(&actions, 3) == 0 else { throw POSIXError(.ENOSYS) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Signals back to their defaults (SIGPIPE is ignored here, and an ignored disposition survives exec) and
        // none blocked; a process group of its own, as Process gives.
        var all = sigset_t(), none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))
        let argv = ([executableURL.path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, executableURL.path, &actions, &attributes, argv, environ)
        // The parent's copies of the child's ends go, so that a reader sees EOF when the child exits.
        childEnds.forEach { try? $0.close() }
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
        state.withLock { $0 = .running(pid) }
    }

    var isRunning: Bool {
        state.withLock { state in
            guard case .running(let pid) = state else { return false }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { state = Self.exited(status) }
            if case .running = state { return true }
            return false
        }
    }

    func waitUntilExit() {
        while true {
            guard case .running(let pid) = state.withLock({ $0 }) else { return }
            var status: Int32 = 0
            let reaped = waitpid(pid, &status, 0)
            if reaped == pid {
                state.withLock { $0 = Self.exited(status) }
                return
            }
            if reaped < 0 && errno != EINTR { usleep(1_000) }  // reaped by isRunning meanwhile
        }
    }

    /// The exit status, or the signal's number if a signal ended it (as `Process` has it).
    var terminationStatus: Int32 {
        if case .exited(let status, _) = state.withLock({ $0 }) { return status }
        return -1
    }

    func terminate() {
        if case .running(let pid) = state.withLock({ $0 }) { kill(pid, SIGTERM) }
    }

    private static func exited(_ status: Int32) -> State {
        let signal = status & 0x7f
        return signal == 0 ? .exited(status: (status >> 8) & 0xff, signalled: false) : .exited(status: signal, signalled: true)
    }

    /// The descriptor to put on `target` in the child; the child's end of a pipe is remembered to be closed here.
    private static func descriptor(_ stream: Any?, forChildAs target: Int32, childEnds: inout [FileHandle]) -> Int32? {
        if let pipe = stream as? Pipe {
            let end = target == 0 ? pipe.fileHandleForReading : pipe.fileHandleForWriting
            childEnds.append(end)
            return end.fileDescriptor
        }
        return (stream as? FileHandle)?.fileDescriptor
    }

    private typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let closeFrom: CloseFrom? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: CloseFrom.self)
    }()
}
