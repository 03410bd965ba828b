import Foundation
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// What a `portsweep listen --reply echo` holds, as it tells a `sweep --to` that asks.
///
/// Why it exists: from the sweeping side, a port the far listener could not hold (another program has it, it
/// needs root, it was not in the range) looks exactly like a port a firewall rejects: a refused connection, an
/// ICMP error, or someone else's answer. The sweep asks once, on a TCP port that works, and reports those ports
/// with the listener's own reason instead of as blocked.
///
/// The question is one line, `portsweep which ports?\n`, as the first bytes of a TCP connection to an echo
/// listener; the answer is one JSON line, then the listener closes. It tells a stranger nothing a port scan
/// would not (which ports are held), never who holds the others, and only over TCP (no reflection).
public struct ListenerRoster: Sendable, Codable, Equatable {
    public static let question = Array("portsweep which ports?\n".utf8)
    /// An answer longer than this is not sent whole (a listen whose holes alternate port by port): it says
    /// `truncated` instead, and the sweep goes on without it.
    public static let maxAnswer = 64 * 1024

    /// Ports the listener could not hold, with why (errno names: EADDRINUSE, EACCES, ...).
    public struct Failed: Sendable, Codable, Equatable {
        public var transport: Transport
        public var ports: PortSet
        public var error: String

        enum CodingKeys: String, CodingKey {
            case transport = "protocol", ports, error
        }

        public init(transport: Transport, ports: PortSet, error: String) {
            self.transport = transport
            self.ports = ports
            self.error = error
        }
    }

    public var portsweep = "listen"
    public var held: [String: PortSet]
    public var failed: [Failed]
    public var truncated: Bool?

    public init(held: [Transport: PortSet], failed: [Failed]) {
        self.held = Dictionary(uniqueKeysWithValues: held.map { ($0.key.rawValue, $0.value) })
        self.failed = failed
    }

    /// The roster of a listen on `ports` for `transports` that could not hold `failures` (port, protocol, errno).
    public init(ports: PortSet, transports: Set<Transport>, failures: [(port: UInt16, transport: Transport, errno: Int32)]) {
        var held: [Transport: PortSet] = [:]
        var failed: [Failed] = []
        for transport in transports.sorted() {
            let mine = failures.filter { $0.transport == transport }
            let missing = Set(mine.map(\.port))
            held[transport] = missing.isEmpty ? ports : PortSet(ports.lazy.filter { !missing.contains($0) })
            for errno in Set(mine.map(\.errno)).sorted() {
                failed.append(Failed(transport: transport, ports: PortSet(mine.filter { $0.errno == errno }.map(\.port)),
                                     error: UVError.name(ofErrno: errno)))
            }
        }
        self.init(held: held, failed: failed)
    }

    public func held(_ transport: Transport) -> PortSet { held[transport.rawValue] ?? PortSet() }

    /// The answer line as sent: the roster, or `truncated` when it would be longer than `maxAnswer`.
    public var answer: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        if let data = try? encoder.encode(self), data.count < ListenerRoster.maxAnswer {
            return Array(data) + [0x0A]
        }
        return Array(#"{"held":{},"failed":[],"portsweep":"listen","truncated":true}"#.utf8) + [0x0A]
    }

    /// The answer read back; nil for anything else (someone else's service on that port).
    public static func parse(_ line: some Collection<UInt8>) -> ListenerRoster? {
        guard let roster = try? JSONDecoder().decode(ListenerRoster.self, from: Data(line)),
              roster.portsweep == "listen", roster.truncated != true else { return nil }
        return roster
    }

    /// The verdicts of the ports this roster says are not held, decided without a test: the listener's own
    /// reason where it tried (EADDRINUSE → USED, EACCES → SUDO, else ERRO with its errno), ERRO with EADDRNOTAVAIL
    /// (the port was never its to hold) where the port is outside its range.
    public func unheld(_ ports: PortSet, transports: [Transport]) -> [PortResult] {
        var results: [PortResult] = []
        for transport in transports {
            let held = self.held(transport)
            let failed = self.failed.filter { $0.transport == transport }
            for port in ports where !held.contains(port) {
                let errno = failed.first { $0.ports.contains(port) }.flatMap { UVError.errno(named: $0.error) } ?? EADDRNOTAVAIL
                let outcome: Outcome = switch errno {
                case EADDRINUSE: .used
                case EACCES, EPERM: .sudo
                default: .erro
                }
                results.append(PortResult(port: port, transport: transport, outcome: outcome, errno: errno))
            }
        }
        return results
    }
}
