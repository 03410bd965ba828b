import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Unbuffered writes to the standard descriptors (no shared FILE* state).
enum Terminal {
    static func write(_ text: String, to fd: Int32) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n <= 0 {
                    if n < 0 && errno == EINTR { continue }
                    return
                }
                offset += n
            }
        }
    }

    static func error(_ text: String) { write(text, to: STDERR_FILENO) }
    static func out(_ text: String) { write(text, to: STDOUT_FILENO) }
    // Asked once: the status line consults them on every write to stdout.
    static let stderrIsTerminal = isatty(STDERR_FILENO) == 1
    static let stdoutIsTerminal = isatty(STDOUT_FILENO) == 1
}

/// The one status line a command keeps at the bottom of a terminal (the sweep's progress bar, listen's status),
/// on stderr. Everything for stdout goes through `out`, so that when both are the same terminal a line of
/// results never lands on the end of the status text: the status is taken down, the lines written, the status
/// drawn again.
final class StatusLine: Sendable {
    static let shared = StatusLine()
    private let shown = Mutex<String?>(nil)

    func show(_ text: String) {
        shown.withLock { shown in
            shown = text
            Terminal.error("\r\u{1B}[2K" + text)
        }
    }

    func clear() {
        shown.withLock { shown in
            if shown != nil { Terminal.error("\r\u{1B}[2K") }
            shown = nil
        }
    }

    func out(_ text: String) {
        shown.withLock { shown in
            guard let status = shown, Terminal.stdoutIsTerminal else { return Terminal.out(text) }
            Terminal.error("\r\u{1B}[2K")
            Terminal.out(text)
            Terminal.error(status)
        }
    }
}
