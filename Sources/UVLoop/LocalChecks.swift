import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// Questions about this machine's addresses and routes, asked of the kernel once, up front, with a throwaway
/// socket (blocking calls, no loop): answers a sweep gives once instead of per port.
public enum LocalChecks {
    /// Whether `ip` is one of this machine's addresses: false only when binding it says EADDRNOTAVAIL.
    public static func isLocal(_ ip: IPAddress) -> Bool {
        let fd = socket(ip.family == .v4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return true }
        defer { close(fd) }
        let rc = SocketAddress(ip, port: 0).withSockAddr { bind(fd, $0, length(ip)) }
        return !(rc != 0 && errno == EADDRNOTAVAIL)
    }

    /// Why this machine has no route to `ip` (the errno of a UDP connect, which asks the routing table and
    /// sends nothing), or nil when it has one.
    public static func routeError(to ip: IPAddress) -> Int32? {
        let fd = socket(ip.family == .v4 ? AF_INET : AF_INET6, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let rc = SocketAddress(ip, port: 9).withSockAddr { connect(fd, $0, length(ip)) }
        let error = errno
        return rc != 0 && [ENETUNREACH, EHOSTUNREACH, EACCES, EPERM, EINVAL].contains(error) ? error : nil
    }

    private static func length(_ ip: IPAddress) -> socklen_t {
        socklen_t(ip.family == .v4 ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
    }
}
