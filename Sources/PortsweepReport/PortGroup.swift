public import PortsweepEngine

/// Consecutive ports of one protocol with the same verdict: one line of grouped output.
public struct PortGroup: Sendable, Hashable {
    public var transport: Transport
    public var first: UInt16
    public var last: UInt16
    public var outcome: Outcome
    /// The errno shared by every port of the group (only kept when grouping by errno too).
    public var errno: Int32
    /// TCP and UDP had this same verdict over these ports: one line, `TCP/UDP`.
    public var bothProtocols = false

    public init(transport: Transport, first: UInt16, last: UInt16, outcome: Outcome, errno: Int32 = 0,
                bothProtocols: Bool = false) {
        self.bothProtocols = bothProtocols
        self.transport = transport
        self.first = first
        self.last = last
        self.outcome = outcome
        self.errno = errno
    }

    public var portText: String { first == last ? "\(first)" : "\(first)-\(last)" }
    public var protocolText: String { bothProtocols ? "TCP/UDP" : transport.rawValue }
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

/// Groups results of a run that tested TCP and UDP, arriving in port order with TCP before UDP for each port,
/// by the pair of verdicts: where both protocols agree over a run of ports, one `TCP/UDP` group; where they
/// differ, a TCP group and a UDP group over the same ports.
public struct ProtocolPairGrouper: Sendable {
    private struct Pair: Equatable {
        var tcp: Outcome, tcpErrno: Int32
        var udp: Outcome, udpErrno: Int32
    }

    public let byErrno: Bool
    private var heldTCP: PortResult?
    private var open: (first: UInt16, last: UInt16, pair: Pair)?

    public init(byErrno: Bool = false) { self.byErrno = byErrno }

    /// Adds a result; returns the groups it closed (in print order).
    public mutating func add(_ result: PortResult) -> [PortGroup] {
        guard result.transport == .udp else {
            heldTCP = result
            return []
        }
        guard let tcp = heldTCP, tcp.port == result.port else { return [] }
        heldTCP = nil
        let pair = Pair(tcp: tcp.outcome, tcpErrno: byErrno ? tcp.errno : 0,
                        udp: result.outcome, udpErrno: byErrno ? result.errno : 0)
        if let current = open, current.pair == pair, result.port == current.last &+ 1 {
            open = (current.first, result.port, pair)
            return []
        }
        let closed = finish()
        open = (result.port, result.port, pair)
        return closed
    }

    /// Closes and returns the open groups.
    public mutating func finish() -> [PortGroup] {
        guard let (first, last, pair) = open else { return [] }
        open = nil
        if pair.tcp == pair.udp && pair.tcpErrno == pair.udpErrno {
            return [PortGroup(transport: .tcp, first: first, last: last, outcome: pair.tcp, errno: pair.tcpErrno,
                              bothProtocols: true)]
        }
        return [PortGroup(transport: .tcp, first: first, last: last, outcome: pair.tcp, errno: pair.tcpErrno),
                PortGroup(transport: .udp, first: first, last: last, outcome: pair.udp, errno: pair.udpErrno)]
    }
}
