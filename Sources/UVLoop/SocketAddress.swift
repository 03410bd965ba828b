import CLibUV

/// An IPv4 or IPv6 address, parsed from its text form (no name resolution except `localhost`). Stored inline
/// (no heap allocation), so addresses are cheap to make per datagram and to use as table keys.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public enum Family: Sendable { case v4, v6 }

    public let family: Family
    /// The address in network byte order: IPv4 in the first 4 bytes of `high`, the rest zero.
    private let high: UInt64
    private let low: UInt64

    /// Network-order bytes: 4 for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        let all = withUnsafeBytes(of: (high, low)) { Array($0) }
        return family == .v4 ? Array(all[0..<4]) : all
    }

    public static let anyV4 = IPAddress(v4: [0, 0, 0, 0])
    public static let anyV6 = IPAddress(v6: [UInt8](repeating: 0, count: 16))
    public static let loopbackV4 = IPAddress(v4: [127, 0, 0, 1])
    public static let loopbackV6 = IPAddress(v6: [UInt8](repeating: 0, count: 15) + [1])

    public init(v4 bytes: [UInt8]) {
        precondition(bytes.count == 4)
        self.init(family: .v4, bytes: bytes)
    }

    public init(v6 bytes: [UInt8]) {
        precondition(bytes.count == 16)
        self.init(family: .v6, bytes: bytes)
    }

    private init(family: Family, bytes: [UInt8]) {
        var words: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &words) { $0.copyBytes(from: bytes) }
        self.family = family
        (high, low) = words
    }

    /// From an `in_addr` / `in6_addr` in memory.
    init(v4 raw: UnsafeRawPointer) {
        var words: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: UnsafeRawBufferPointer(start: raw, count: 4)) }
        family = .v4
        (high, low) = words
    }

    init(v6 raw: UnsafeRawPointer) {
        var words: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: UnsafeRawBufferPointer(start: raw, count: 16)) }
        family = .v6
        (high, low) = words
    }

    /// Copies the address into an `in_addr` / `in6_addr` at `raw`.
    func store(to raw: UnsafeMutableRawPointer) {
        withUnsafeBytes(of: (high, low)) { raw.copyMemory(from: $0.baseAddress!, byteCount: family == .v4 ? 4 : 16) }
    }

    /// Parses `1.2.3.4`, `::1`, `[::1]` or `localhost`; nil for anything else.
    public init?(_ text: String) {
        var text = text
        if text.lowercased() == "localhost" { text = "127.0.0.1" }
        if text.hasPrefix("["), text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(v4: withUnsafeBytes(of: &v4) { Array($0) })
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self.init(v6: withUnsafeBytes(of: &v6) { Array($0) })
            return
        }
        return nil
    }

    /// Byte `i` of the address (network order).
    public subscript(byte i: Int) -> UInt8 {
        withUnsafeBytes(of: (high, low)) { $0[i] }
    }

    /// The first `prefix` bits kept, the rest zero (`2001:db8:1:2:3:4:5:6` / 64 → `2001:db8:1:2::`).
    public func masked(prefix: Int) -> IPAddress {
        let bits = family == .v4 ? 32 : 128
        let keep = max(0, min(bits, prefix))
        var out = bytes
        for i in 0..<out.count {
            let left = keep - i * 8
            out[i] &= left >= 8 ? 0xff : left <= 0 ? 0 : ~(0xff >> UInt8(left))
        }
        return family == .v4 ? IPAddress(v4: out) : IPAddress(v6: out)
    }

    /// `::ffff:a.b.c.d` as the IPv4 address it stands for; any other address as it is.
    public var unmapped: IPAddress {
        guard isV4Mapped else { return self }
        let all = bytes
        return IPAddress(v4: Array(all[12..<16]))
    }

    private var isV4Mapped: Bool {
        family == .v6 && (0..<10).allSatisfy { self[byte: $0] == 0 } && self[byte: 10] == 0xff && self[byte: 11] == 0xff
    }

    /// The wildcard address of the same family.
    public var wildcard: IPAddress { family == .v4 ? .anyV4 : .anyV6 }

    public var isWildcard: Bool { bytes.allSatisfy { $0 == 0 } }

    /// 127.0.0.0/8, ::1, the wildcard addresses (which reach this host), and IPv4-mapped loopback.
    public var isLocalhost: Bool { isLoopback || isWildcard }

    /// 127.0.0.0/8, ::1, or IPv4-mapped 127.0.0.0/8.
    public var isLoopback: Bool {
        let ip = unmapped
        return ip.family == .v4 ? ip[byte: 0] == 127 : ip == .loopbackV6
    }

    /// 224.0.0.0/4 or ff00::/8.
    public var isMulticast: Bool {
        let ip = unmapped
        return ip.family == .v4 ? ip[byte: 0] & 0xf0 == 0xe0 : ip[byte: 0] == 0xff
    }

    /// 169.254.0.0/16 or fe80::/10.
    public var isLinkLocal: Bool {
        let ip = unmapped
        return ip.family == .v4 ? ip[byte: 0] == 169 && ip[byte: 1] == 254 : ip[byte: 0] == 0xfe && ip[byte: 1] & 0xc0 == 0x80
    }

    /// 255.255.255.255 (a subnet's own broadcast address cannot be told from here).
    public var isBroadcast: Bool {
        let ip = unmapped
        return ip.family == .v4 && (0..<4).allSatisfy { ip[byte: $0] == 0xff }
    }

    public var description: String {
        var out = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        withUnsafeBytes(of: (high, low)) { raw in
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
    init?(_ sa: UnsafePointer<sockaddr>) {
        switch Int32(sa.pointee.sa_family) {
        case AF_INET:
            let raw = UnsafeRawPointer(sa)
            ip = IPAddress(v4: raw + MemoryLayout<sockaddr_in>.offset(of: \.sin_addr)!)
            port = UInt16(bigEndian: raw.load(fromByteOffset: MemoryLayout<sockaddr_in>.offset(of: \.sin_port)!, as: UInt16.self))
        case AF_INET6:
            let raw = UnsafeRawPointer(sa)
            ip = IPAddress(v6: raw + MemoryLayout<sockaddr_in6>.offset(of: \.sin6_addr)!)
            port = UInt16(bigEndian: raw.load(fromByteOffset: MemoryLayout<sockaddr_in6>.offset(of: \.sin6_port)!, as: UInt16.self))
        default:
            return nil
        }
    }

    /// The C form, in a `sockaddr_storage`.
    var storage: sockaddr_storage {
        var ss = sockaddr_storage()
        withUnsafeMutableBytes(of: &ss) { raw in
            switch ip.family {
            case .v4:
                var sin = sockaddr_in()
                sin.sin_family = sa_family_t(AF_INET)
                sin.sin_port = port.bigEndian
                withUnsafeMutableBytes(of: &sin.sin_addr) { ip.store(to: $0.baseAddress!) }
                raw.storeBytes(of: sin, as: sockaddr_in.self)
            case .v6:
                var sin6 = sockaddr_in6()
                sin6.sin6_family = sa_family_t(AF_INET6)
                sin6.sin6_port = port.bigEndian
                withUnsafeMutableBytes(of: &sin6.sin6_addr) { ip.store(to: $0.baseAddress!) }
                raw.storeBytes(of: sin6, as: sockaddr_in6.self)
            }
        }
        return ss
    }

    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>) throws -> R) rethrows -> R {
        var ss = storage
        return try withUnsafePointer(to: &ss) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0) }
        }
    }

    public var description: String {
        ip.family == .v4 ? "\(ip):\(port)" : "[\(ip)]:\(port)"
    }
}

extension SocketAddress {
    /// Parses `1.2.3.4:80`, `[::1]:80` or `localhost:80`; nil for anything else.
    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        let host = String(text[..<colon])
        // A bare IPv6 address has colons of its own: it must be bracketed to carry a port.
        guard host.hasPrefix("[") || !host.contains(":"), let ip = IPAddress(host) else { return nil }
        self.init(ip, port: port)
    }
}

/// An address block, `10.0.0.0/8` or `2001:db8::/32`; a bare address is a block of one.
public struct CIDR: Sendable, Hashable, CustomStringConvertible {
    public let network: IPAddress
    public let prefix: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let ip = IPAddress(parts[0]) else { return nil }
        let bits = ip.family == .v4 ? 32 : 128
        let prefix = parts.count == 2 ? Int(parts[1]) : bits
        guard let prefix, (0...bits).contains(prefix) else { return nil }
        network = ip.masked(prefix: prefix)
        self.prefix = prefix
    }

    public func contains(_ ip: IPAddress) -> Bool {
        let ip = ip.family == network.family ? ip : ip.unmapped
        return ip.family == network.family && ip.masked(prefix: prefix) == network
    }

    public var description: String { "\(network)/\(prefix)" }
}

extension sockaddr_storage {
    /// Sets the port of an IPv4 or IPv6 address in place.
    mutating func setPort(_ port: UInt16) {
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
    static func reading(_ call: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<Int32>) -> Int32) -> SocketAddress? {
        var ss = sockaddr_storage()
        var len = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call($0, &len) } }
        guard rc == 0 else { return nil }
        return withUnsafePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress($0) } }
    }
}

extension IPAddress: Codable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let ip = IPAddress(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an IP address: \(text)"))
        }
        self = ip
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

extension SocketAddress: Codable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let address = SocketAddress(parsing: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an address: \(text)"))
        }
        self = address
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
