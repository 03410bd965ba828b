#if canImport(Glibc)
import Glibc
#endif

/// The process's descriptor limit, raised as far as it goes, and what it leaves for ports in flight.
public struct DescriptorBudget: Sendable, CustomStringConvertible {
    /// RLIMIT_NOFILE soft and hard limits after raising.
    public let soft: Int
    public let hard: Int
    /// Descriptors open when measured (stdio, the loops' own).
    public let inUse: Int
    /// Kept free for the rest of the process (logs, the loops' wake-ups, accept's EMFILE reserve): 64, or a
    /// quarter of a small limit, so a low RLIMIT_NOFILE still leaves something for ports.
    public var reserve: Int { min(64, max(8, soft / 4)) }

    public init(soft: Int, hard: Int, inUse: Int) {
        self.soft = soft
        self.hard = hard
        self.inUse = inUse
    }

    /// Raises the soft limit to the hard limit and, as root, tries to raise the hard limit to `fs.nr_open`.
    /// Never fails: whatever could not be raised stays as it was.
    public static func raise() -> DescriptorBudget {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if geteuid() == 0, let nrOpen = readNrOpen(), nrOpen > limit.rlim_max {
            var wanted = limit
            wanted.rlim_max = nrOpen
            wanted.rlim_cur = nrOpen
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &wanted) == 0 { limit = wanted }
        }
        if limit.rlim_cur < limit.rlim_max {
            var wanted = limit
            wanted.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &wanted) == 0 { limit = wanted }
        }
        return current()
    }

    /// The limits as they are now.
    public static func current() -> DescriptorBudget {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let cap = { (v: rlim_t) -> Int in v > rlim_t(Int32.max) ? Int(Int32.max) : Int(v) }
        return DescriptorBudget(soft: cap(limit.rlim_cur), hard: cap(limit.rlim_max), inUse: openDescriptorCount())
    }

    /// Descriptors left for ports after what is open and the reserve.
    public var available: Int { max(0, soft - inUse - reserve) }

    /// How many ports can be in flight when each needs `perPort` descriptors.
    public func ports(perPort: Int) -> Int { max(1, available / perPort) }

    public var description: String { "RLIMIT_NOFILE \(soft) (hard \(hard)), \(inUse) open" }

    private static func readNrOpen() -> rlim_t? {
        let fd = open("/proc/sys/fs/nr_open", O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 32)
        let n = read(fd, &bytes, bytes.count)
        guard n > 0 else { return nil }
        let text = String(decoding: bytes[0..<n], as: UTF8.self).trimmingPrefix(" ")
        return rlim_t(text.prefix { $0.isNumber })
    }

    /// Counts /proc/self/fd entries (the process's open descriptors).
    public static func openDescriptorCount() -> Int {
        guard let dir = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(dir) }
        var count = 0
        while readdir(dir) != nil { count += 1 }
        return max(0, count - 3)  // ".", "..", and the directory's own descriptor
    }
}
