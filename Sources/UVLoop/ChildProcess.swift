import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// How a child process ended.
public enum Termination: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signalled(Int32)

    public var description: String {
        switch self {
        case .exited(let status): return "exited with status \(status)"
        case .signalled(let signal): return "killed by \(Termination.signalName(signal))"
        }
    }

    static func signalName(_ signal: Int32) -> String {
        let names: [Int32: String] = [SIGKILL: "SIGKILL", SIGTERM: "SIGTERM", SIGINT: "SIGINT", SIGSEGV: "SIGSEGV",
                                      SIGABRT: "SIGABRT", SIGILL: "SIGILL", SIGBUS: "SIGBUS", SIGHUP: "SIGHUP",
                                      SIGTRAP: "SIGTRAP", SIGPIPE: "SIGPIPE"]
        return names[signal] ?? "signal \(signal)"
    }
}

/// A child process of the callback kit, started with `uv_spawn` on a loop: its stdin and stdout are pipes this
/// process holds as `ByteStream`s, stderr and any `inherited` descriptors (as 3, 4, ...) are shared, and its
/// end is reported on the loop. Loop thread only; the process handle is closed after the exit callback.
public final class ChildProcess {
    public let loop: EventLoop
    public let pid: Int32
    /// Writes to the child's stdin (it reads); nil when not asked for.
    public let stdin: ByteStream?
    /// Reads the child's stdout; nil when not asked for.
    public let stdout: ByteStream?
    /// Called once, on the loop, when the child has ended.
    public var onExit: ((Termination) -> Void)?
    public private(set) var termination: Termination?
    private let process: UnsafeMutablePointer<uv_process_t>

    /// Starts `arguments[0]` (a path) with `arguments`. libuv creates the pipes with O_CLOEXEC, so a later child
    /// never inherits this one's pipes.
    public init(_ arguments: [String], on loop: EventLoop, pipeStdin: Bool = true, pipeStdout: Bool = true,
                inherited: [Int32] = []) throws(UVError) {
        loop.preconditionInEventLoop()
        self.loop = loop
        let stdin = pipeStdin ? try ByteStream(pipeOn: loop) : nil
        let stdout: ByteStream?
        do {
            stdout = pipeStdout ? try ByteStream(pipeOn: loop) : nil
        } catch {
            stdin?.close()
            throw error
        }
        self.stdin = stdin
        self.stdout = stdout
        let process = uvAllocate(uv_process_t.self)
        self.process = process
        var stdio = [uv_stdio_container_t](repeating: uv_stdio_container_t(), count: 3 + inherited.count)
        func pipe(_ stream: ByteStream?, _ flags: UInt32, fallback fd: Int32) -> uv_stdio_container_t {
            var container = uv_stdio_container_t()
            if let stream {
                container.flags = uv_stdio_flags(UInt32(UV_CREATE_PIPE.rawValue) | flags)
                container.data.stream = stream.stream
            } else {
                container.flags = UV_INHERIT_FD
                container.data.fd = fd
            }
            return container
        }
        stdio[0] = pipe(stdin, UInt32(UV_READABLE_PIPE.rawValue), fallback: STDIN_FILENO)
        stdio[1] = pipe(stdout, UInt32(UV_WRITABLE_PIPE.rawValue), fallback: STDOUT_FILENO)
        stdio[2] = pipe(nil, 0, fallback: STDERR_FILENO)
        for (index, fd) in inherited.enumerated() { stdio[3 + index] = pipe(nil, 0, fallback: fd) }
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for arg in argv { free(arg) } }
        let rc: Int32 = stdio.withUnsafeMutableBufferPointer { stdioBuffer in
            argv.withUnsafeMutableBufferPointer { argvBuffer in
                var options = uv_process_options_t()
                options.file = UnsafePointer(argvBuffer[0])
                options.args = argvBuffer.baseAddress
                options.stdio_count = Int32(stdioBuffer.count)
                options.stdio = stdioBuffer.baseAddress
                options.exit_cb = { handle, status, signal in
                    let child = Unmanaged<ChildProcess>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                    child.exited(signal != 0 ? .signalled(signal) : .exited(Int32(truncatingIfNeeded: status)))
                }
                return uv_spawn(loop.uv, process, &options)
            }
        }
        if rc < 0 {
            stdin?.close()
            stdout?.close()
            // A failed uv_spawn leaves an initialised handle that must still be closed.
            uv_close(uvHandle(process)) { UnsafeMutableRawPointer($0!).deallocate() }
            pid = 0
            throw UVError(rc)
        }
        pid = process.pointee.pid
        process.pointee.data = Unmanaged.passRetained(self).toOpaque()  // released when the handle closes
    }

    private func exited(_ how: Termination) {
        termination = how
        uv_close(uvHandle(process)) { handle in
            Unmanaged<ChildProcess>.fromOpaque(handle!.pointee.data).release()
            UnsafeMutableRawPointer(handle!).deallocate()
        }
        let onExit = self.onExit
        self.onExit = nil
        onExit?(how)
    }

    /// Sends `signal` (SIGTERM by default) unless the child has already ended.
    public func kill(_ signal: Int32 = 15) {
        guard termination == nil else { return }
        uv_process_kill(process, signal)
    }
}
