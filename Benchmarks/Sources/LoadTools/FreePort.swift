#if canImport(Glibc)
import Glibc
#endif

/// Sockets of the benchmarks' own, on 127.0.0.1.
public enum LoopbackSocket {
    /// A socket of `type` (SOCK_STREAM, SOCK_DGRAM) bound to 127.0.0.1 on a port the kernel picks; returns the
    /// descriptor and the port.
    public static func bound(_ type: __socket_type) -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(type.rawValue), 0)
        precondition(fd >= 0, "socket: \(errno)")
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        precondition(ok, "bind: \(errno)")
        return (fd, UInt16(bigEndian: address.sin_port))
    }
}

/// A TCP port nothing holds on 127.0.0.1 right now (bound to port 0, read back, released).
public enum FreePort {
    public static func tcp() -> UInt16 {
        let (fd, port) = LoopbackSocket.bound(SOCK_STREAM)
        close(fd)
        return port
    }
}
