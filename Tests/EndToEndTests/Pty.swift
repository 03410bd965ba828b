import Foundation

/// Runs portsweep on a pseudo-terminal (util-linux `script`), so stdout and stderr are both a terminal, as for a
/// person at a shell: what the program writes there, escapes and all, comes back on the pipe.
enum Pty {
    /// A launcher for `Portsweep.run(wrapper:)` and `ListenProcess(launcher:)`: the command after it becomes
    /// script's command line (its arguments must not need quoting), and portsweep is script's direct child.
    static let launcher = ["/bin/sh", "-c", "exec /usr/bin/script -qefc \"exec $*\" /dev/null", "sh"]

    static var available: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/script") }

    /// Whether every occurrence of `text` in the terminal stream starts a line: after a newline or after the
    /// erase-line escape that takes a status line down, never glued to the end of a status line.
    static func startsALine(_ text: String, in stream: String) -> Bool {
        var found = false
        var rest = stream[...]
        while let range = rest.range(of: text) {
            found = true
            let before = stream[stream.startIndex..<range.lowerBound]
            // "\r\n" is one Character in Swift: hasSuffix("\n") does not see it.
            guard before.isEmpty || before.hasSuffix("\n") || before.hasSuffix("\r\n") || before.hasSuffix("\u{1B}[2K") else { return false }
            rest = stream[range.upperBound...]
        }
        return found
    }

    /// The process a launcher's `script` runs (its only child).
    static func child(of pid: Int32) -> Int32? {
        let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)
        return text?.split(separator: " ").first.flatMap { Int32($0) }
    }
}
