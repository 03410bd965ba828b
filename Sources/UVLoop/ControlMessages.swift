import CLibUV

/// Ancillary data of recvmsg/sendmsg (`cmsghdr` records), walked and written with the same arithmetic as
/// glibc's CMSG_* macros (which Swift cannot import): a header of `cmsg_len`, `cmsg_level`, `cmsg_type`, then
/// the data, each record padded to the alignment of `size_t`.
enum ControlMessages {
    static let alignment = MemoryLayout<Int>.size
    static func align(_ n: Int) -> Int { (n + alignment - 1) & ~(alignment - 1) }
    static let headerSize = align(MemoryLayout<cmsghdr>.size)
    /// CMSG_SPACE: room one record with `dataLength` bytes takes in a buffer.
    static func space(_ dataLength: Int) -> Int { headerSize + align(dataLength) }
    /// CMSG_LEN: the value of its `cmsg_len`.
    static func length(_ dataLength: Int) -> Int { headerSize + dataLength }

    /// Calls `body` with each record's level, type and data in the first `length` bytes of `control`, until it
    /// returns false.
    static func forEach(in control: UnsafeRawBufferPointer, length: Int,
                        _ body: (_ level: Int32, _ type: Int32, _ data: UnsafeRawBufferPointer) -> Bool) {
        let levelOffset = MemoryLayout<cmsghdr>.offset(of: \.cmsg_level)!
        let typeOffset = MemoryLayout<cmsghdr>.offset(of: \.cmsg_type)!
        var offset = 0
        let end = min(length, control.count)
        while offset + headerSize <= end {
            let recordLength = Int(control.load(fromByteOffset: offset, as: Int.self))
            guard recordLength >= headerSize, offset + recordLength <= end else { return }
            let level = control.load(fromByteOffset: offset + levelOffset, as: Int32.self)
            let type = control.load(fromByteOffset: offset + typeOffset, as: Int32.self)
            let data = UnsafeRawBufferPointer(rebasing: control[(offset + headerSize)..<(offset + recordLength)])
            if !body(level, type, data) { return }
            offset += align(recordLength)
        }
    }

    /// One `recvmsg`: the datagram into `payload`, its source into `name`, ancillary records into `control`.
    /// Returns the byte count (-1 with `errno` set on failure) and the length of the records written.
    static func receive(_ fd: Int32, payload: UnsafeMutableRawBufferPointer, control: UnsafeMutableRawBufferPointer,
                        name: inout sockaddr_storage, flags: Int32) -> (count: Int, controlLength: Int) {
        withUnsafeMutablePointer(to: &name) { namePointer in
            var iov = iovec(iov_base: payload.baseAddress, iov_len: payload.count)
            return withUnsafeMutablePointer(to: &iov) { iovPointer in
                var message = msghdr()
                message.msg_name = UnsafeMutableRawPointer(namePointer)
                message.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
                message.msg_iov = iovPointer
                message.msg_iovlen = 1
                message.msg_control = control.baseAddress
                message.msg_controllen = control.count
                let n = recvmsg(fd, &message, flags)
                return (n, n < 0 ? 0 : message.msg_controllen)
            }
        }
    }

    /// Writes one record at the start of `buffer` (which has `space(data.count)` bytes); returns its space.
    static func write(level: Int32, type: Int32, data: UnsafeRawBufferPointer, into buffer: UnsafeMutableRawPointer) -> Int {
        let total = space(data.count)
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: total)
        buffer.storeBytes(of: length(data.count), as: Int.self)
        buffer.storeBytes(of: level, toByteOffset: MemoryLayout<cmsghdr>.offset(of: \.cmsg_level)!, as: Int32.self)
        buffer.storeBytes(of: type, toByteOffset: MemoryLayout<cmsghdr>.offset(of: \.cmsg_type)!, as: Int32.self)
        (buffer + headerSize).copyMemory(from: data.baseAddress!, byteCount: data.count)
        return total
    }
}

/// The Linux ABI of the packet-info records (glibc hides `in6_pktinfo` behind _GNU_SOURCE, which Swift's
/// Glibc module does not define): `in_pktinfo` is ifindex, spec_dst, addr (4 bytes each); `in6_pktinfo` is the
/// address (16 bytes), then ifindex (4).
enum PacketInfo {
    static let ipv4Size = 12
    static let ipv6Size = 20
    static let ipv6ReceiveOption: Int32 = 49  // IPV6_RECVPKTINFO
    static let ipv6Type: Int32 = 50           // IPV6_PKTINFO

    /// The destination address (and interface) a received record names.
    static func destination(level: Int32, type: Int32, data: UnsafeRawBufferPointer) -> (IPAddress, UInt32)? {
        if level == Int32(IPPROTO_IP) && type == IP_PKTINFO && data.count >= ipv4Size {
            let interface = data.load(fromByteOffset: 0, as: UInt32.self)
            return (IPAddress(v4: data.baseAddress! + 8), interface)
        }
        if level == Int32(IPPROTO_IPV6) && type == ipv6Type && data.count >= ipv6Size {
            let interface = data.load(fromByteOffset: 16, as: UInt32.self)
            return (IPAddress(v6: data.baseAddress!), interface)
        }
        return nil
    }
}
