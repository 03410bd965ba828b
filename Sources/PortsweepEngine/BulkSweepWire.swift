/// The bulk endpoint of a checker (`POST /sweep` on `portsweep serve`), as both ends speak it.
///
/// The caller holds listeners on `ports` and asks; the checker connects back to the caller's own address on
/// each port (TCP) or sends it a datagram (UDP), with `BulkSweepWire.probeLine(token:)`, and expects
/// `BulkSweepWire.answerLine(token:)` back. The answer streams JSON Lines: a `BulkProbeRecord` per port as it
/// is decided, then one `BulkSweepEnd`.
public enum BulkSweepWire {
    /// What the checker sends on each port: the sweep's line with the caller's token, so that the caller's
    /// listener can tell the checker's probe from anyone else's connection.
    public static func probeLine(token: String) -> [UInt8] { Array("client -> server \(token)\n".utf8) }
    /// What the caller's listener answers.
    public static func answerLine(token: String) -> [UInt8] { Array("server -> client \(token)\n".utf8) }

    /// A token: 8 to 64 letters and digits (it goes into a line on the wire and into logs).
    public static func isValidToken(_ token: String) -> Bool {
        (8...64).contains(token.utf8.count) && token.utf8.allSatisfy { (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0) }
    }

    /// The largest timeout a caller may ask per port.
    public static let maxTimeoutMilliseconds = 10_000
}

/// The body of `POST /sweep`.
public struct BulkSweepRequest: Codable, Sendable, Equatable {
    /// A port spec as `--ports` takes it (`1-1024,8080`).
    public var ports: String
    /// `tcp`, `udp`.
    public var protocols: [String]
    public var timeoutMilliseconds: Int
    public var token: String
    /// Optional: the address the caller expects to be probed. The checker probes only the caller's own address;
    /// naming another is refused (never silently probed instead, never silently ignored).
    public var address: String?
    /// Optional: the caller's own ceiling of probes per second (a gentle sweep through a small router).
    public var probesPerSecond: Double?

    public init(ports: String, protocols: [String], timeoutMilliseconds: Int, token: String, address: String? = nil) {
        self.address = address
        self.ports = ports
        self.protocols = protocols
        self.timeoutMilliseconds = timeoutMilliseconds
        self.token = token
    }

    enum CodingKeys: String, CodingKey {
        case ports, protocols, token, address
        case timeoutMilliseconds = "timeout_ms"
        case probesPerSecond = "probes_per_second"
    }
}

/// What the checker saw on one port.
public struct BulkProbeRecord: Codable, Sendable, Equatable {
    public var port: Int
    public var `protocol`: String
    /// TCP: the connection was made. UDP: always false (there is no connection to tell).
    public var connected: Bool
    /// The caller's answer line came back, exactly.
    public var answered: Bool
    /// Something else came back (another program on the port, a proxy).
    public var wrongAnswer: Bool
    /// Why it ended short: `ETIMEDOUT`, `ECONNREFUSED`, `EHOSTUNREACH`...; nil when answered.
    public var error: String?

    public init(port: Int, protocol proto: String, connected: Bool, answered: Bool, wrongAnswer: Bool = false, error: String? = nil) {
        self.port = port
        self.protocol = proto
        self.connected = connected
        self.answered = answered
        self.wrongAnswer = wrongAnswer
        self.error = error
    }

    enum CodingKeys: String, CodingKey {
        case port, `protocol`, connected, answered, error
        case wrongAnswer = "wrong_answer"
    }
}

/// The last line of a bulk answer: how many probes were made. A stream that ends without it was cut off.
public struct BulkSweepEnd: Codable, Sendable, Equatable {
    public var done: Bool
    public var probed: Int

    public init(probed: Int) {
        done = true
        self.probed = probed
    }
}
