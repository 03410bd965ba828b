import CLibUV

/// Integer socket options the callback kit sets on sockets it owns.
public enum SocketOption: Sendable {
    case reuseAddress
    case receiveBuffer
    case sendBuffer
    case noDelay

    func set(on fd: Int32, _ value: Int32) {
        var value = value
        let size = socklen_t(MemoryLayout<Int32>.size)
        switch self {
        case .reuseAddress: setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &value, size)
        case .noDelay: setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &value, size)
        case .receiveBuffer:
            // FORCE first: as root it goes past net.core.rmem_max.
            if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &value, size) != 0 {
                setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &value, size)
            }
        case .sendBuffer:
            if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &value, size) != 0 {
                setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &value, size)
            }
        }
    }
}
