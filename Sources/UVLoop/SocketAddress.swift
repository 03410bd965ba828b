public import CLibUV

/// An IPv4 or IPv6 address, parsed from its text form (no name resolution except `localhost`).
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public enum Family: Sendable { case v4, v6 }

    /// Network-order bytes: 4 for IPv4, 16 for IPv6.
    public let bytes: [UInt8]

    public var family: Family { bytes.count == 4 ? .v4 : .v6 }

    public static let anyV4 = IPAddress(v4: [0, 0, 0, 0])
    public static let anyV6 = IPAddress(v6: [UInt8](repeating: 0, count: 16))
    public static let loopbackV4 = IPAddress(v4: [127, 0, 0, 1])
    public static let loopbackV6 = IPAddress(v6: [UInt8](repeating: 0, count: 15) + [1])

    public init(v4 bytes: [UInt8]) { precondition(bytes.count == 4); self.bytes = bytes }
    public init(v6 bytes: [UInt8]) { precondition(bytes.count == 16); self.bytes = bytes }

    /// Parses `1.2.3.4`, `::1`, `[::1]` or `localhost`; nil for anything else.
    public init?(_ text: String) {
        var text = text
        if text.lowercased() == "localhost" { text = "127.0.0.1" }
        if text.hasPrefix("["), text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
            return
        }
        return nil
    }

    /// The wildcard address of the same family.
    public var wildcard: IPAddress { family == .v4 ? .anyV4 : .anyV6 }

    public var isWildcard: Bool { bytes.allSatisfy { $0 == 0 } }

    /// 127.0.0.0/8, ::1, the wildcard addresses (which reach this host), and IPv4-mapped loopback.
    public var isLocalhost: Bool {
        switch family {
        case .v4: return bytes[0] == 127 || isWildcard
        case .v6:
            if self == .loopbackV6 || isWildcard { return true }
            let mapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff
            return mapped && bytes[12] == 127
        }
    }

    public var description: String {
        var out = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        bytes.withUnsafeBytes { raw in
            _ = inet_ntop(family == .v4 ? AF_INET : AF_INET6, raw.baseAddress, &out, socklen_t(out.count))
        }
        return out.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

/// An address and a port.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    public var ip: IPAddress
    public var port: UInt16

    public init(_ ip: IPAddress, port: UInt16) {
        self.ip = ip
        self.port = port
    }

    /// Reads a `sockaddr_in` or `sockaddr_in6`; nil for other families.
    public init?(_ sa: UnsafePointer<sockaddr>) {
        switch Int32(sa.pointee.sa_family) {
        case AF_INET:
            let sin = UnsafeRawPointer(sa).load(as: sockaddr_in.self)
            var a = sin.sin_addr
            ip = IPAddress(v4: withUnsafeBytes(of: &a) { Array($0) })
            port = UInt16(bigEndian: sin.sin_port)
        case AF_INET6:
            let sin6 = UnsafeRawPointer(sa).load(as: sockaddr_in6.self)
            var a = sin6.sin6_addr
            ip = IPAddress(v6: withUnsafeBytes(of: &a) { Array($0) })
            port = UInt16(bigEndian: sin6.sin6_port)
        default:
            return nil
        }
    }

    /// The C form, in a `sockaddr_storage`.
    public var storage: sockaddr_storage {
        var ss = sockaddr_storage()
        withUnsafeMutableBytes(of: &ss) { raw in
            switch ip.family {
            case .v4:
                var sin = sockaddr_in()
                sin.sin_family = sa_family_t(AF_INET)
                sin.sin_port = port.bigEndian
                withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: ip.bytes) }
                raw.storeBytes(of: sin, as: sockaddr_in.self)
            case .v6:
                var sin6 = sockaddr_in6()
                sin6.sin6_family = sa_family_t(AF_INET6)
                sin6.sin6_port = port.bigEndian
                withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: ip.bytes) }
                raw.storeBytes(of: sin6, as: sockaddr_in6.self)
            }
        }
        return ss
    }

    public func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>) throws -> R) rethrows -> R {
        var ss = storage
        return try withUnsafePointer(to: &ss) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0) }
        }
    }

    public var description: String {
        ip.family == .v4 ? "\(ip):\(port)" : "[\(ip)]:\(port)"
    }
}

extension sockaddr_storage {
    /// Sets the port of an IPv4 or IPv6 address in place.
    public mutating func setPort(_ port: UInt16) {
        let family = Int32(ss_family)
        withUnsafeMutableBytes(of: &self) { raw in
            if family == AF_INET {
                raw.storeBytes(of: port.bigEndian, toByteOffset: MemoryLayout<sockaddr_in>.offset(of: \.sin_port)!, as: UInt16.self)
            } else {
                raw.storeBytes(of: port.bigEndian, toByteOffset: MemoryLayout<sockaddr_in6>.offset(of: \.sin6_port)!, as: UInt16.self)
            }
        }
    }
}

extension SocketAddress {
    /// Reads an address that a libuv call (`uv_tcp_getsockname`, `uv_udp_getpeername`...) writes; nil when the
    /// call fails or the family is neither IPv4 nor IPv6.
    public static func reading(_ call: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<Int32>) -> Int32) -> SocketAddress? {
        var ss = sockaddr_storage()
        var len = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call($0, &len) } }
        guard rc == 0 else { return nil }
        return withUnsafePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress($0) } }
    }
}
