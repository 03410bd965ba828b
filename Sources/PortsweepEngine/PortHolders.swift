import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// Who holds a port this process could not bind, as far as /proc tells.
public enum PortHolder: Sendable, Hashable, Codable, CustomStringConvertible {
    /// A socket of a process we can see.
    case process(name: String, pid: Int32)
    /// The TIME-WAIT of a connection that used the port locally (its peer given): no process holds it, and it
    /// goes away by itself within a minute.
    case timeWait(peer: String)
    /// A socket on the port whose owner is not visible (another user's process, without root).
    case hidden

    public var description: String {
        switch self {
        case .process(let name, let pid): return "held by \(name), pid \(pid)"
        case .timeWait(let peer): return "TIME-WAIT of \(peer)"
        case .hidden: return "held by a process this user cannot see"
        }
    }
}

/// The sockets of this network namespace by local port, read once from /proc/net/{tcp,tcp6,udp,udp6}, and
/// their owning processes from /proc/PID/fd: to say who holds a port when EADDRINUSE says only that someone does.
public struct PortHolders: Sendable {
    private struct Entry {
        var state: Int
        var inode: UInt64
        var remote: String
    }

    private var tcp: [UInt16: [Entry]] = [:]
    private var udp: [UInt16: [Entry]] = [:]
    private var owners: [UInt64: PortHolder] = [:]

    /// Reads the socket tables, and the owners of the sockets on `ports` (all ports when nil).
    public static func snapshot(ports: Set<UInt16>? = nil) -> PortHolders {
        var holders = PortHolders()
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] { PortHolders.read(file, into: &holders.tcp, ports: ports) }
        for file in ["/proc/net/udp", "/proc/net/udp6"] { PortHolders.read(file, into: &holders.udp, ports: ports) }
        var wanted = Set<UInt64>()
        for entries in Array(holders.tcp.values) + Array(holders.udp.values) {
            for entry in entries where entry.inode != 0 { wanted.insert(entry.inode) }
        }
        holders.owners = PortHolders.owners(of: wanted)
        return holders
    }

    /// Who holds `port` for `transport`: a listening (or bound) socket's process first, then a TIME-WAIT.
    public func holder(of port: UInt16, transport: Transport) -> PortHolder? {
        let entries = (transport == .tcp ? tcp : udp)[port] ?? []
        // TCP: LISTEN (0x0A) first, then any other socket with an owner; UDP sockets are all "bound".
        let ranked = entries.sorted { ($0.state == 0x0A ? 0 : 1) < ($1.state == 0x0A ? 0 : 1) }
        for entry in ranked where entry.inode != 0 {
            if let owner = owners[entry.inode] { return owner }
        }
        if ranked.contains(where: { $0.inode != 0 }) { return .hidden }
        if transport == .tcp, let waiting = entries.first(where: { $0.state == 0x06 }) { return .timeWait(peer: waiting.remote) }
        return nil
    }

    private static func read(_ path: String, into table: inout [UInt16: [Entry]], ports: Set<UInt16>?) {
        guard let text = PortHolders.contents(of: path) else { return }
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 10, let local = PortHolders.address(fields[1]), let remote = PortHolders.address(fields[2]),
                  let state = Int(fields[3], radix: 16), let inode = UInt64(fields[9]) else { continue }
            if let ports, !ports.contains(local.port) { continue }
            table[local.port, default: []].append(Entry(state: state, inode: inode, remote: "\(remote)"))
        }
    }

    /// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6): each 32-bit word in host byte order.
    static func address(_ field: Substring) -> SocketAddress? {
        let parts = field.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1], radix: 16) else { return nil }
        let hex = Array(parts[0].utf8)
        guard hex.count == 8 || hex.count == 32 else { return nil }
        var bytes: [UInt8] = []
        for word in stride(from: 0, to: hex.count, by: 8) {
            guard let value = UInt32(String(decoding: hex[word..<(word + 8)], as: UTF8.self), radix: 16) else { return nil }
            withUnsafeBytes(of: value) { bytes += $0 }  // host order (little-endian here): the kernel's layout
        }
        return SocketAddress(bytes.count == 4 ? IPAddress(v4: bytes) : IPAddress(v6: bytes).unmapped, port: port)
    }

    /// The processes holding socket inodes, from /proc/PID/fd links (`socket:[INODE]`).
    private static func owners(of inodes: Set<UInt64>) -> [UInt64: PortHolder] {
        guard !inodes.isEmpty, let proc = opendir("/proc") else { return [:] }
        defer { closedir(proc) }
        var found: [UInt64: PortHolder] = [:]
        var link = [CChar](repeating: 0, count: 64)
        while found.count < inodes.count, let entry = readdir(proc) {
            let name = PortHolders.name(of: entry)
            guard let pid = Int32(name), let fds = opendir("/proc/\(name)/fd") else { continue }
            var comm: String?
            while let fd = readdir(fds) {
                let fdName = PortHolders.name(of: fd)
                let n = readlink("/proc/\(name)/fd/\(fdName)", &link, link.count - 1)
                guard n > 8 else { continue }
                link[n] = 0
                let target = String(decoding: link[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                guard target.hasPrefix("socket:["), let inode = UInt64(target.dropFirst(8).dropLast()),
                      inodes.contains(inode) else { continue }
                if comm == nil {
                    comm = contents(of: "/proc/\(name)/comm").map { String($0.prefix { $0 != "\n" }) } ?? "?"
                }
                found[inode] = .process(name: comm!, pid: pid)
            }
            closedir(fds)
        }
        return found
    }

    /// A directory entry's name, read in place. Never through `entry.pointee`: that copies a whole `dirent`
    /// (280 bytes) while the kernel packs records to `d_reclen`, so the copy of the last entry of a getdents
    /// buffer could read past its end (a segfault seen once in CI).
    private static func name(of entry: UnsafeMutablePointer<dirent>) -> String {
        let offset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        return String(cString: (UnsafeRawPointer(entry) + offset).assumingMemoryBound(to: CChar.self))
    }

    static func contents(of path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            out += chunk[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }
}
