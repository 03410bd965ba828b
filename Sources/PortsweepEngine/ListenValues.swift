public import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// What a listener sends back.
public enum ReplyMode: String, Sendable, CaseIterable {
    /// HTTP/1.1 200 OK, text/plain, `Port test successful!` and a line naming the port and the client (TCP); the
    /// same text as one datagram (UDP).
    case http
    /// Every byte back (TCP); every datagram back to its sender (UDP).
    case echo
    /// Accept and read, never send.
    case silent
}

/// Limits that keep a listener answering under load and abuse.
public struct ListenLimits: Sendable {
    /// Open TCP connections at most, over all ports of a loop; more are accepted and closed at once.
    public var maxConnections: Int
    /// Open TCP connections at most on one port.
    public var maxConnectionsPerPort: Int
    /// A connection with no traffic for this long is closed.
    public var idleTimeout: Duration

    public init(maxConnections: Int = 10_000, maxConnectionsPerPort: Int = 1_000, idleTimeout: Duration = .seconds(60)) {
        self.maxConnections = maxConnections
        self.maxConnectionsPerPort = maxConnectionsPerPort
        self.idleTimeout = idleTimeout
    }
}

/// Something that happened on a listener, for the log and the statistics.
public enum ListenEvent: Sendable {
    /// A TCP connection ended.
    case connection(ConnectionRecord)
    /// A datagram arrived (and was answered, per the reply mode).
    case datagram(DatagramRecord)
    /// A connection was refused by a cap, or accept failed.
    case rejected(port: UInt16, client: SocketAddress?, reason: String)
}

public struct ConnectionRecord: Sendable {
    public var localPort: UInt16
    public var client: SocketAddress?
    public var bytesIn: Int
    public var bytesOut: Int
    public var requests: Int
    public var duration: Duration
    /// Why it ended: `closed by client`, `idle timeout`, `bad request`, `reset`...
    public var end: String

    public init(localPort: UInt16, client: SocketAddress?, bytesIn: Int, bytesOut: Int, requests: Int,
                duration: Duration, end: String) {
        self.localPort = localPort
        self.client = client
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.requests = requests
        self.duration = duration
        self.end = end
    }
}

public struct DatagramRecord: Sendable {
    public var localPort: UInt16
    public var client: SocketAddress?
    public var bytesIn: Int
    public var bytesOut: Int

    public init(localPort: UInt16, client: SocketAddress?, bytesIn: Int, bytesOut: Int) {
        self.localPort = localPort
        self.client = client
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
    }
}

/// A port that could not be listened on, and why.
public struct ListenFailure: Sendable, Equatable {
    public var port: UInt16
    public var transport: Transport
    public var errno: Int32

    public init(port: UInt16, transport: Transport, errno: Int32) {
        self.port = port
        self.transport = transport
        self.errno = errno
    }

    public var reason: String {
        switch errno {
        case EADDRINUSE: return "in use by another process"
        case EACCES, EPERM: return "needs root or CAP_NET_BIND_SERVICE (use a port above 1023)"
        case EADDRNOTAVAIL: return "the bind address is not an address of this machine"
        case EMFILE, ENFILE: return "out of file descriptors"
        default: return UVError.name(ofErrno: errno)
        }
    }
}
