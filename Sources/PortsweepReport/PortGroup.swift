public import PortsweepEngine

/// Consecutive ports of one protocol with the same verdict: one line of grouped output.
public struct PortGroup: Sendable, Hashable {
    public var transport: Transport
    public var first: UInt16
    public var last: UInt16
    public var outcome: Outcome
    /// The errno shared by every port of the group (only kept when grouping by errno too).
    public var errno: Int32

    public init(transport: Transport, first: UInt16, last: UInt16, outcome: Outcome, errno: Int32 = 0) {
        self.transport = transport
        self.first = first
        self.last = last
        self.outcome = outcome
        self.errno = errno
    }

    public var portText: String { first == last ? "\(first)" : "\(first)-\(last)" }
    public var count: Int { Int(last) - Int(first) + 1 }
}

/// Folds results, arriving in port order per protocol, into groups of consecutive ports with the same verdict.
public struct Grouper: Sendable {
    /// Split groups where the errno changes too (for detailed output).
    public let byErrno: Bool
    private var open: [Transport: PortGroup] = [:]

    public init(byErrno: Bool = false) { self.byErrno = byErrno }

    /// Adds a result; returns the group it closed, if any.
    public mutating func add(_ result: PortResult) -> PortGroup? {
        let errno = byErrno ? result.errno : 0
        if var group = open[result.transport] {
            if result.port == group.last &+ 1 && result.outcome == group.outcome && errno == group.errno {
                group.last = result.port
                open[result.transport] = group
                return nil
            }
            open[result.transport] = PortGroup(transport: result.transport, first: result.port, last: result.port,
                                               outcome: result.outcome, errno: errno)
            return group
        }
        open[result.transport] = PortGroup(transport: result.transport, first: result.port, last: result.port,
                                           outcome: result.outcome, errno: errno)
        return nil
    }

    /// Closes and returns the groups still open.
    public mutating func finish() -> [PortGroup] {
        defer { open = [:] }
        return open.values.sorted { ($0.first, $0.transport) < ($1.first, $1.transport) }
    }

    /// Groups a whole list at once.
    public static func groups(of results: [PortResult], byErrno: Bool = false) -> [PortGroup] {
        var grouper = Grouper(byErrno: byErrno)
        var out = results.compactMap { grouper.add($0) }
        out += grouper.finish()
        return out
    }
}
