import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// Fixed bytes the callback kit writes and checks what it received against (the sweep's
/// `client -> server\n`): kept for the life of the process, because libuv writes from them asynchronously.
public struct WireText: @unchecked Sendable {
    let bytes: UnsafeMutablePointer<CChar>
    /// Length in bytes.
    public let count: Int

    public init(_ text: StaticString) {
        count = text.utf8CodeUnitCount
        bytes = .allocate(capacity: count)
        text.withUTF8Buffer { utf8 in
            for i in 0..<count { bytes[i] = CChar(bitPattern: utf8[i]) }
        }
    }

    /// Text made at run time (a sweep's line with its token). Like a static text it is never freed: a slab may
    /// still be writing it when its sweep ends, and a process makes one per sweep.
    public init(copying text: [UInt8]) {
        count = text.count
        bytes = .allocate(capacity: max(1, count))
        for i in 0..<count { bytes[i] = CChar(bitPattern: text[i]) }
    }

    /// The text's bytes.
    public var array: [UInt8] { (0..<count).map { UInt8(bitPattern: bytes[$0]) } }

    var buffer: uv_buf_t { uv_buf_init(bytes, UInt32(count)) }

    /// Checks received bytes against the text from offset `matched`, advancing it: false on a mismatch or on
    /// more bytes than the text has. For a stream, where the text may come in pieces.
    public func matches(_ received: ReceivedBytes, at matched: inout UInt8) -> Bool {
        let offset = Int(matched)
        guard offset + received.count <= count, memcmp(received.base, bytes + offset, received.count) == 0 else {
            return false
        }
        matched += UInt8(received.count)
        return true
    }

    /// Whether `received` is the whole text and nothing else. For a datagram.
    public func isExactly(_ received: ReceivedBytes) -> Bool {
        received.count == count && memcmp(received.base, bytes, count) == 0
    }
}

/// Bytes a kit callback hands over: valid only while the callback runs (they sit in a buffer reused by the
/// next read).
public struct ReceivedBytes {
    let base: UnsafeRawPointer
    public let count: Int

    /// A copy, for keeping.
    public var array: [UInt8] { Array(UnsafeRawBufferPointer(start: base, count: count)) }
}

/// An IP address in its C form, whose port is set per call: the kit's slabs bind and send to the same address
/// on thousands of ports without building a `sockaddr` each time.
public struct PortAddress: @unchecked Sendable {
    private var storage: sockaddr_storage
    public let ip: IPAddress

    public init(_ ip: IPAddress) {
        self.ip = ip
        storage = SocketAddress(ip, port: 0).storage
    }

    /// Calls `body` with the C address of `ip:port`.
    func with<R>(port: UInt16, _ body: (UnsafePointer<sockaddr>) -> R) -> R {
        var copy = storage
        copy.setPort(port)
        return withUnsafePointer(to: &copy) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0) } }
    }
}

/// Where a datagram came from, during the receive callback that delivers it: a reply goes back to it without
/// a copy.
public struct DatagramPeer {
    let address: UnsafePointer<sockaddr>

    /// The sender's port.
    public var port: UInt16 { SocketAddress.port(of: address) }
    /// The sender's address, for keeping.
    public var socketAddress: SocketAddress? { SocketAddress(address) }
}

extension SocketAddress {
    /// The port of a `sockaddr_in` or `sockaddr_in6`, without reading the rest.
    static func port(of address: UnsafePointer<sockaddr>) -> UInt16 {
        let raw = UnsafeRawPointer(address)
        let offset = Int32(address.pointee.sa_family) == AF_INET
            ? MemoryLayout<sockaddr_in>.offset(of: \.sin_port)! : MemoryLayout<sockaddr_in6>.offset(of: \.sin6_port)!
        return UInt16(bigEndian: raw.load(fromByteOffset: offset, as: UInt16.self))
    }
}
