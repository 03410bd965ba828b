public import PortsweepEngine
public import PortsweepHTTP
public import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// What a listener sends back.
public enum ReplyMode: String, Sendable, CaseIterable, Codable {
    /// HTTP/1.1 200 OK, text/plain, `Port test successful!` and a line naming the port and the client (TCP); the
    /// same text as one datagram (UDP), cut to the size of the datagram that asked.
    case http
    /// Every byte back (TCP); every datagram back to its sender (UDP).
    case echo
    /// Accept and read, never send.
    case silent
}

/// What may be answered over UDP. A UDP reply goes to whatever source address a datagram claims, so a
/// listener facing the internet must never become a reflector: answer no larger than the question, never to
/// one of its own ports on this host (two listeners would answer each other forever), never to the well-known
/// ports of other responders, never to a broadcast or multicast question, and at a bounded rate per source.
public struct UDPReplyPolicy: Sendable, Codable, Equatable {
    /// Replies per second to one source address (a burst of as many), 0 for no limit. Sources on this host are
    /// not limited (the self-test); a remote sweep of a whole range raises it.
    public var repliesPerSecond: Int = 50
    /// Source addresses whose budget is remembered at most (the least recent are forgotten first).
    public var sources: Int = 65_536

    public init(repliesPerSecond: Int = 50, sources: Int = 65_536) {
        self.repliesPerSecond = max(0, repliesPerSecond)
        self.sources = max(1, sources)
    }

    /// Ports of other UDP responders that answer anything (echo, daytime, qotd, chargen, time, DNS, TFTP,
    /// portmap, NTP, NetBIOS, SNMP, CLDAP, RIP, SSDP, WS-Discovery, mDNS, memcached...): a datagram "from" one
    /// of them is a reflection attempt, never a client.
    public static let reflectorPorts: Set<UInt16> = [0, 7, 9, 13, 17, 19, 37, 53, 69, 111, 123, 137, 138, 161, 162,
                                                    389, 427, 520, 623, 1434, 1900, 3283, 3702, 5353, 5683, 11211]
}

/// Why a datagram got no reply (or a shorter one).
public enum UDPSuppression: String, Sendable, Codable {
    case ownPort = "from a port this listen holds"
    case reflectorPort = "from a reflector port"
    case rateLimited = "rate limit of its source"
    case empty = "empty datagram"
    case groupDestination = "sent to a broadcast or multicast address"
}

/// Limits and reply rules of a listen.
public struct ListenLimits: Sendable, Codable, Equatable {
    public var connections: ConnectionLimits
    public var udp: UDPReplyPolicy

    public init(connections: ConnectionLimits = ListenLimits.defaultConnections, udp: UDPReplyPolicy = UDPReplyPolicy()) {
        self.connections = connections
        self.udp = udp
    }

    public static var defaultConnections: ConnectionLimits { ConnectionLimits() }
}

/// A datagram that arrived, and what was answered.
public struct DatagramRecord: Sendable, Codable, Equatable {
    public var localPort: UInt16
    public var client: SocketAddress?
    public var bytesIn: Int
    public var bytesOut: Int
    /// Why no reply (or a cut one) was sent; nil when the reply mode's answer went out whole.
    public var suppressed: UDPSuppression?
    public var time: Double

    public init(localPort: UInt16, client: SocketAddress?, bytesIn: Int, bytesOut: Int,
                suppressed: UDPSuppression? = nil, time: Double = WallClock.now) {
        self.localPort = localPort
        self.client = client
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.suppressed = suppressed
        self.time = time
    }
}

/// Something that happened on a listener, for the log and the statistics.
public enum ListenEvent: Sendable {
    /// A TCP connection ended.
    case connection(ConnectionRecord)
    /// A datagram arrived (and was answered, per the reply mode and the reply rules).
    case datagram(DatagramRecord)
    /// A connection was refused by a cap, or accept failed.
    case rejected(port: UInt16, client: SocketAddress?, reason: String, time: Double)
    /// Something for the operator: a worker process ended or was replaced.
    case note(String, time: Double)
}

/// A port that could not be listened on, why, and who holds it when /proc says.
public struct ListenFailure: Sendable, Equatable, Codable {
    public var port: UInt16
    public var transport: Transport
    public var errno: Int32
    public var holder: PortHolder?

    public init(port: UInt16, transport: Transport, errno: Int32, holder: PortHolder? = nil) {
        self.port = port
        self.transport = transport
        self.errno = errno
        self.holder = holder
    }

    public var reason: String {
        switch errno {
        case EADDRINUSE: return holder.map { "in use (\($0))" } ?? "in use by another process"
        case EACCES, EPERM: return "needs root or CAP_NET_BIND_SERVICE (use a port above 1023)"
        case EADDRNOTAVAIL: return "the bind address is not an address of this machine"
        case EMFILE, ENFILE: return "out of file descriptors"
        default: return UVError.name(ofErrno: errno)
        }
    }
}

/// What the listen's limits and reply rules did, for the summary and the JSON log.
public struct ListenCounters: Sendable, Equatable, Codable {
    public var connections = ConnectionCounters()
    /// UDP datagrams not answered, by reason.
    public var udpNotAnswered: [String: Int] = [:]
    /// UDP http answers cut to the size of the question.
    public var udpTruncated = 0
    /// Worker processes that ended on their own and were replaced.
    public var workersReplaced = 0

    public init() {}

    public static func + (a: ListenCounters, b: ListenCounters) -> ListenCounters {
        var sum = a
        sum.connections = a.connections + b.connections
        sum.udpNotAnswered.merge(b.udpNotAnswered, uniquingKeysWith: +)
        sum.udpTruncated += b.udpTruncated
        sum.workersReplaced += b.workersReplaced
        return sum
    }

    /// `evicted 3, request timeouts 2, UDP not answered 5 (rate limit of its source)`; empty when nothing acted.
    public var summary: String {
        var parts: [String] = []
        let c = connections
        for (count, what) in [(c.evicted, "evicted"), (c.refused, "refused"), (c.requestTimeouts, "request timeouts"),
                              (c.tooSlow, "too slow"), (c.idleClosed, "idle closed"),
                              (c.backpressurePauses, "reading paused for unread replies"),
                              (c.acceptErrors, "accept errors"), (c.refusedRequests, "HTTP requests refused"), (udpTruncated, "UDP answers cut to the question"),
                              (workersReplaced, "workers replaced")] where count > 0 {
            parts.append("\(what) \(count)")
        }
        for (reason, count) in udpNotAnswered.sorted(by: { $0.key < $1.key }) {
            parts.append("UDP not answered \(count) (\(reason))")
        }
        return parts.joined(separator: ", ")
    }
}

