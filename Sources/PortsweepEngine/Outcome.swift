/// The outcome bits of one port's test, as the Incoming Port Tester defined them. PASS is the empty set.
public struct Outcome: OptionSet, Sendable, Hashable, Comparable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let pass: Outcome = []
    /// No connection in time (or refused).
    public static let fail = Outcome(rawValue: 1)
    /// The client's message did not reach the server in time, or arrived wrong.
    public static let send = Outcome(rawValue: 2)
    /// Binding a port below 1024 was refused for lack of privilege.
    public static let sudo = Outcome(rawValue: 4)
    /// Another process holds the port.
    public static let used = Outcome(rawValue: 8)
    /// The server's reply did not reach the client in time, or arrived wrong.
    public static let recv = Outcome(rawValue: 16)
    /// Anything else; the errno is kept with the result.
    public static let erro = Outcome(rawValue: 64)

    public static let all: [(Outcome, String)] = [
        (.fail, "FAIL"), (.send, "SEND"), (.sudo, "SUDO"), (.used, "USED"), (.recv, "RECV"), (.erro, "ERRO"),
    ]

    /// `PASS`, `FAIL`, ... ; combined bits join with `+` (`SEND+RECV`).
    public var word: String {
        if isEmpty { return "PASS" }
        return Outcome.all.filter { contains($0.0) }.map(\.1).joined(separator: "+")
    }

    public var isPass: Bool { isEmpty }

    public var description: String { word }

    public static func < (a: Outcome, b: Outcome) -> Bool { a.rawValue < b.rawValue }

    /// Parses a word as printed (`PASS`, `SEND+RECV`), any case.
    public init?(word: String) {
        var bits: Outcome = []
        for part in word.uppercased().split(separator: "+") {
            if part == "PASS" { continue }
            guard let match = Outcome.all.first(where: { $0.1 == part }) else { return nil }
            bits.insert(match.0)
        }
        self = bits
    }
}

/// TCP or UDP.
public enum Transport: String, Sendable, Hashable, CaseIterable, Comparable, Codable {
    case tcp = "TCP"
    case udp = "UDP"

    public static func < (a: Transport, b: Transport) -> Bool { a == .tcp && b == .udp }
}

/// The verdict for one port and protocol.
public struct PortResult: Sendable, Hashable {
    public var port: UInt16
    public var transport: Transport
    public var outcome: Outcome
    /// The errno behind a non-PASS outcome (ETIMEDOUT for a missed deadline), 0 when none applies.
    public var errno: Int32
    /// USED: who holds the port, where /proc shows it.
    public var holder: PortHolder?

    public init(port: UInt16, transport: Transport, outcome: Outcome, errno: Int32 = 0, holder: PortHolder? = nil) {
        self.port = port
        self.transport = transport
        self.outcome = outcome
        self.errno = errno
        self.holder = holder
    }
}
