public import UVLoop

/// Which way a sweep's packets go, and so which probes test each port.
public enum SweepDirection: Sendable {
    /// The Incoming Port Tester: listen here on each port and connect to it through the target (a NAT's port
    /// forward, or this host as the outside reaches it).
    case inbound
    /// Out to a remote `portsweep listen --reply echo` that holds the ports: connect (or send) to the target on
    /// each port, send `line`, and expect `answer` back (the line itself from an echo; a checker probing a
    /// `sweep --via` caller expects that caller's answer line). No listener here.
    case outbound(line: WireText, answer: WireText)

    /// Out to an echo: the answer is the line.
    public static func echo(_ line: WireText) -> SweepDirection { .outbound(line: line, answer: line) }

    public var isOutbound: Bool {
        if case .outbound = self { return true }
        return false
    }

    /// The line an outbound sweep sends: the Incoming Port Tester's, with a token that is this sweep's alone,
    /// so that an echo left over from another sweep (or a service that happens to echo) is not taken for ours.
    public static func outboundLine(token: String) -> WireText {
        WireText(copying: Array("client -> server \(token)\n".utf8))
    }

    /// A token of 16 random hex digits.
    public static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        let value = generator.next() as UInt64
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
