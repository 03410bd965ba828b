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
    /// USED: who holds every port of the group (kept with the errno).
    public var holder: PortHolder?

    public init(transport: Transport, first: UInt16, last: UInt16, outcome: Outcome, errno: Int32 = 0,
                bothProtocols: Bool = false, holder: PortHolder? = nil) {
        self.bothProtocols = bothProtocols
        self.holder = holder
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
        let holder = byErrno ? result.holder : nil
        if var group = open[result.transport] {
            if result.port == group.last &+ 1 && result.outcome == group.outcome && errno == group.errno
                && holder == group.holder {
                group.last = result.port
                open[result.transport] = group
                return nil
            }
            open[result.transport] = PortGroup(transport: result.transport, first: result.port, last: result.port,
                                               outcome: result.outcome, errno: errno, holder: holder)
            return group
        }
        open[result.transport] = PortGroup(transport: result.transport, first: result.port, last: result.port,
                                           outcome: result.outcome, errno: errno, holder: holder)
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
/// differ, a TCP group and a UDP group over the same ports. A port with only one protocol's verdict (a sweep
/// interrupted between the two) gets a group of its own for that protocol.
public struct ProtocolPairGrouper: Sendable {
    private struct Pair: Equatable {
        var tcp: Outcome, tcpErrno: Int32, tcpHolder: PortHolder?
        var udp: Outcome, udpErrno: Int32, udpHolder: PortHolder?
    }

    public let byErrno: Bool
    private var heldTCP: PortResult?
    private var open: (first: UInt16, last: UInt16, pair: Pair)?
    /// Runs of ports with one protocol's verdict only.
    private var singles: Grouper

    public init(byErrno: Bool = false) {
        self.byErrno = byErrno
        singles = Grouper(byErrno: byErrno)
    }

    /// Adds a result; returns the groups it closed (in print order).
    public mutating func add(_ result: PortResult) -> [PortGroup] {
        var closed: [PortGroup] = []
        if let tcp = heldTCP, result.transport == .tcp || tcp.port != result.port {
            // The TCP verdict before this one has no UDP partner.
            closed += closeOpen()
            closed += singles.add(tcp).map { [$0] } ?? []
            heldTCP = nil
        }
        if result.transport == .tcp {
            heldTCP = result
            return closed
        }
        guard let tcp = heldTCP else {
            closed += closeOpen()
            closed += singles.add(result).map { [$0] } ?? []
            return closed
        }
        heldTCP = nil
        closed += singles.finish()
        let pair = Pair(tcp: tcp.outcome, tcpErrno: byErrno ? tcp.errno : 0, tcpHolder: byErrno ? tcp.holder : nil,
                        udp: result.outcome, udpErrno: byErrno ? result.errno : 0, udpHolder: byErrno ? result.holder : nil)
        if let current = open, current.pair == pair, result.port == current.last &+ 1 {
            open = (current.first, result.port, pair)
            return closed
        }
        closed += closeOpen()
        open = (result.port, result.port, pair)
        return closed
    }

    private mutating func closeOpen() -> [PortGroup] {
        guard let (first, last, pair) = open else { return [] }
        open = nil
        if pair.tcp == pair.udp && pair.tcpErrno == pair.udpErrno && pair.tcpHolder == pair.udpHolder {
            return [PortGroup(transport: .tcp, first: first, last: last, outcome: pair.tcp, errno: pair.tcpErrno,
                              bothProtocols: true, holder: pair.tcpHolder)]
        }
        return [PortGroup(transport: .tcp, first: first, last: last, outcome: pair.tcp, errno: pair.tcpErrno,
                          holder: pair.tcpHolder),
                PortGroup(transport: .udp, first: first, last: last, outcome: pair.udp, errno: pair.udpErrno,
                          holder: pair.udpHolder)]
    }

    /// Closes and returns the open groups (and a TCP verdict still waiting for its partner).
    public mutating func finish() -> [PortGroup] {
        var closed = closeOpen()
        if let tcp = heldTCP {
            closed += singles.add(tcp).map { [$0] } ?? []
            heldTCP = nil
        }
        return closed + singles.finish()
    }
}
