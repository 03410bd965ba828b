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
    static var stderrIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }
}
