import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// One datagram as it arrived: valid only during the delegate call.
public struct Datagram {
    /// The payload, in the socket's receive buffer.
    public let bytes: UnsafeRawBufferPointer
    public let source: SocketAddress
    /// The address it was sent to (from IP_PKTINFO / IPV6_PKTINFO): one of this host's, or a broadcast or
    /// multicast address. nil when the kernel did not say.
    public let destination: IPAddress?
    let interface: UInt32
}

/// What a `DatagramSocket` tells its owner, on the loop thread.
public protocol DatagramSocketDelegate: AnyObject {
    func received(_ datagram: Datagram, on socket: DatagramSocket)
}

/// A UDP socket of the callback kit that knows where each datagram was sent, and answers from there.
///
/// libuv's UDP API passes no control messages, so this socket is driven by `recvmsg`/`sendmsg` on a socket of
/// its own, watched by a `uv_poll_t` (libuv's way to run sockets it does not own). A socket bound to the
/// wildcard on a host with several addresses would otherwise answer from the address the kernel picks for the
/// route back, and a connected client (nc -u, a probe) drops an answer from an address it did not send to.
///
/// Loop thread only. The descriptor is closed after the poll handle's close callback.
public final class DatagramSocket {
    public let loop: EventLoop
    /// Held strongly until the handle has closed (then let go): every handle is closed, so no cycle outlives it.
    public var delegate: (any DatagramSocketDelegate)?
    public private(set) var port: UInt16
    /// A number the owner may use to find its own state for this socket.
    public var tag = 0
    private let fd: Int32
    private let family: IPAddress.Family
    private let poll: UnsafeMutablePointer<uv_poll_t>
    private var isClosing = false
    private var onClosed: (() -> Void)?
    /// Datagrams read per readiness callback at most: a flood on one port must not starve the loop's others.
    private static let batch = 64

    /// Binds `address` (no SO_REUSEADDR: with it, a port another process holds with SO_REUSEADDR would bind and
    /// look free) and starts receiving. Throws `addressInUse`, `accessDenied`, EADDRNOTAVAIL.
    public init(_ address: SocketAddress, on loop: EventLoop) throws(UVError) {
        loop.preconditionInEventLoop()
        self.loop = loop
        family = address.ip.family
        port = address.port
        let fd = socket(family == .v4 ? AF_INET : AF_INET6,
                        Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw UVError(-errno) }
        self.fd = fd
        var one: Int32 = 1
        let size = socklen_t(MemoryLayout<Int32>.size)
        // IP_PKTINFO on an IPv6 socket covers the IPv4 datagrams a dual-stack socket receives.
        setsockopt(fd, Int32(IPPROTO_IP), IP_PKTINFO, &one, size)
        if family == .v6 { setsockopt(fd, Int32(IPPROTO_IPV6), PacketInfo.ipv6ReceiveOption, &one, size) }
        let bound = address.withSockAddr { bind(fd, $0, socklen_t(address.ip.family == .v4 ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)) }
        if bound != 0 {
            let error = UVError(-errno)
            Glibc.close(fd)
            throw error
        }
        if address.port == 0 {
            port = SocketAddress.reading { getsockname(fd, $0, UnsafeMutableRawPointer($1).assumingMemoryBound(to: socklen_t.self)) }?.port ?? 0
        }
        poll = uvAllocate(uv_poll_t.self)
        var rc = uv_poll_init_socket(loop.uv, poll, fd)
        if rc < 0 {
            uvFree(poll)
            Glibc.close(fd)
            throw UVError(rc)
        }
        poll.pointee.data = Unmanaged.passRetained(self).toOpaque()  // released in the close callback
        rc = uv_poll_start(poll, Int32(UV_READABLE.rawValue)) { handle, status, _ in
            let socket = Unmanaged<DatagramSocket>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            if status >= 0 { socket.readReady() }
        }
        if rc < 0 {
            close()
            throw UVError(rc)
        }
    }

    private func readReady() {
        let buffer = loop.readBuffer
        var name = sockaddr_storage()
        let controlSize = ControlMessages.space(PacketInfo.ipv6Size) + ControlMessages.space(PacketInfo.ipv4Size)
        var control = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0),
                       UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        precondition(MemoryLayout.size(ofValue: control) >= controlSize)
        for _ in 0..<DatagramSocket.batch {
            guard !isClosing else { return }
            let received = withUnsafeMutableBytes(of: &control) { controlBytes in
                ControlMessages.receive(fd, payload: buffer, control: controlBytes, name: &name, flags: Int32(MSG_DONTWAIT))
            }
            if received.count < 0 {
                if errno == EINTR { continue }
                return  // EAGAIN: drained (other errors: nothing to do for a listener)
            }
            let source = withUnsafePointer(to: &name) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress($0) } }
            guard let source else { continue }
            var destination: (IPAddress, UInt32)?
            withUnsafeBytes(of: &control) { controlBytes in
                ControlMessages.forEach(in: controlBytes, length: received.controlLength) { level, type, data in
                    destination = PacketInfo.destination(level: level, type: type, data: data)
                    return destination == nil
                }
            }
            let datagram = Datagram(bytes: UnsafeRawBufferPointer(rebasing: buffer[0..<received.count]), source: source,
                                    destination: destination?.0, interface: destination?.1 ?? 0)
            delegate?.received(datagram, on: self)
        }
    }

    /// Answers `datagram` with `bytes`, from the address it was sent to. Returns the bytes sent, or the error
    /// (a full send buffer is EAGAIN: the answer is dropped, as the network would).
    @discardableResult
    public func reply(_ bytes: UnsafeRawBufferPointer, to datagram: Datagram) -> Result<Int, UVError> {
        send(bytes, to: datagram.source, from: datagram.destination)
    }

    /// Sends one datagram to `peer`, from `source` when given (one of this host's addresses).
    public func send(_ bytes: UnsafeRawBufferPointer, to peer: SocketAddress, from source: IPAddress? = nil) -> Result<Int, UVError> {
        guard !isClosing else { return .failure(.badHandle) }
        var name = peer.storage
        if family == .v6 && peer.ip.family == .v4 {
            name = SocketAddress(IPAddress.v4Mapped(peer.ip), port: peer.port).storage
        }
        let nameLength = socklen_t(name.ss_family == sa_family_t(AF_INET)
                                   ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
        var control = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let sent: Int = withUnsafeMutableBytes(of: &control) { controlBytes in
            var controlLength = 0
            if let source = source?.unmapped, !source.isMulticast, !source.isBroadcast {
                controlLength = PacketInfo.write(source: source, into: controlBytes.baseAddress!)
            }
            return withUnsafeMutablePointer(to: &name) { namePointer in
                var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
                return withUnsafeMutablePointer(to: &iov) { iovPointer in
                    var message = msghdr()
                    message.msg_name = UnsafeMutableRawPointer(namePointer)
                    message.msg_namelen = nameLength
                    message.msg_iov = iovPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlLength > 0 ? controlBytes.baseAddress : nil
                    message.msg_controllen = controlLength
                    return sendmsg(fd, &message, Int32(MSG_DONTWAIT))
                }
            }
        }
        return sent < 0 ? .failure(UVError(-errno)) : .success(sent)
    }

    public func setOption(_ option: SocketOption, _ value: Int32) { option.set(on: fd, value) }

    /// Stops receiving and closes the socket; `then` runs once the descriptor is closed. Idempotent.
    public func close(then: (() -> Void)? = nil) {
        guard !isClosing else { return }
        isClosing = true
        onClosed = then
        uv_close(UnsafeMutableRawPointer(poll).assumingMemoryBound(to: uv_handle_t.self)) { handle in
            let socket = Unmanaged<DatagramSocket>.fromOpaque(handle!.pointee.data).takeRetainedValue()
            UnsafeMutableRawPointer(handle!).deallocate()
            // libuv's rule for uv_poll_t: the descriptor is closed by its owner, after the handle.
            Glibc.close(socket.fd)
            socket.delegate = nil
            let then = socket.onClosed
            socket.onClosed = nil
            then?()
        }
    }
}

extension PacketInfo {
    /// Writes the record that makes `sendmsg` send from `source`; returns its space.
    static func write(source: IPAddress, into buffer: UnsafeMutableRawPointer) -> Int {
        var data = (UInt64(0), UInt64(0), UInt64(0))
        return withUnsafeMutableBytes(of: &data) { raw in
            if source.family == .v4 {
                // ifindex 0 and spec_dst: the kernel routes as usual but sends from spec_dst.
                source.store(to: raw.baseAddress! + 4)
                return ControlMessages.write(level: Int32(IPPROTO_IP), type: IP_PKTINFO,
                                             data: UnsafeRawBufferPointer(rebasing: raw[0..<ipv4Size]), into: buffer)
            }
            source.store(to: raw.baseAddress!)
            return ControlMessages.write(level: Int32(IPPROTO_IPV6), type: ipv6Type,
                                         data: UnsafeRawBufferPointer(rebasing: raw[0..<ipv6Size]), into: buffer)
        }
    }
}

extension IPAddress {
    /// `::ffff:a.b.c.d` for an IPv4 address.
    static func v4Mapped(_ ip: IPAddress) -> IPAddress {
        IPAddress(v6: [UInt8](repeating: 0, count: 10) + [0xff, 0xff] + ip.bytes)
    }
}
