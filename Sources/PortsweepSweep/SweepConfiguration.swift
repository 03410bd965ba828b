public import PortsweepEngine
public import UVLoop

/// What to sweep and how.
public struct SweepConfiguration: Sendable {
    public var ports: PortSet
    /// Where the client connects: this host's address as the outside world reaches it.
    public var target: IPAddress
    /// Where the listeners bind; nil: the wildcard of the target's family (0.0.0.0 or ::).
    public var bind: IPAddress?
    /// The deadline of each step of a port's test.
    public var timeout: Duration
    /// Ports in flight over all loops; nil: a default sized for loopback, bounded by the descriptor limit.
    public var concurrency: Int?
    public var transports: Set<Transport>
    /// UDP: how many times the client's line is resent within a step (datagrams get lost, even on loopback).
    public var retries: Int

    public init(ports: PortSet, target: IPAddress = .loopbackV4, bind: IPAddress? = nil,
                timeout: Duration = .seconds(3), concurrency: Int? = nil, transports: Set<Transport> = [.tcp],
                retries: Int = 2) {
        self.retries = max(0, retries)
        self.ports = ports
        self.target = target
        self.bind = bind
        self.timeout = timeout
        self.concurrency = concurrency
        self.transports = transports
    }

    public var bindAddress: IPAddress { bind ?? target.wildcard }

    /// The protocols to test, TCP first.
    public var orderedTransports: [Transport] { transports.sorted() }

    /// UDP resends at this interval: the timeout split evenly over the first send and the retries.
    public var retransmitInterval: Duration { timeout / (retries + 1) }
}

/// How a sweep will run: loops, and per protocol the window and slots, from the descriptor budget.
public struct SweepPlan: Sendable, CustomStringConvertible {
    public struct Share: Sendable {
        /// Ports actively in flight per loop.
        public var windowPerLoop: Int
        /// Slots per loop (active plus stalled ports), bounded by descriptors.
        public var capacityPerLoop: Int
    }

    public var loops: Int
    public var shares: [Transport: Share]
    public var budget: DescriptorBudget
    /// The concurrency asked for, when the descriptor limit cut it down.
    public var requestedConcurrency: Int?

    /// Descriptors one port in flight needs: TCP a listener, a client and the accepted server; UDP its server
    /// socket (the client socket is shared by the loop's ports).
    public static func descriptorsPerPort(_ transport: Transport) -> Int { transport == .tcp ? 3 : 1 }

    /// Default active ports per loop: on loopback larger windows only add queueing delay (and, for UDP,
    /// retransmissions).
    public static func defaultWindowPerLoop(_ transport: Transport) -> Int { transport == .tcp ? 256 : 512 }

    public init(configuration: SweepConfiguration, loops: Int, budget: DescriptorBudget) {
        let loops = max(1, loops)
        let transports = configuration.orderedTransports
        // Every protocol gets the same number of slots out of the descriptors.
        let perSlotSet = transports.map(SweepPlan.descriptorsPerPort).reduce(0, +)
        let slotsTotal = max(1, budget.available / max(1, perSlotSet))
        self.loops = loops
        self.budget = budget
        shares = [:]
        for transport in transports {
            let wanted = configuration.concurrency ?? SweepPlan.defaultWindowPerLoop(transport) * loops
            let window = min(wanted, slotsTotal)
            if window < wanted { requestedConcurrency = wanted }
            let windowPerLoop = max(1, window / loops)
            shares[transport] = Share(windowPerLoop: windowPerLoop, capacityPerLoop: max(windowPerLoop, slotsTotal / loops))
        }
    }

    public var description: String {
        var parts: [String] = []
        for (transport, share) in shares.sorted(by: { $0.key < $1.key }) {
            parts.append("\(transport.rawValue): window \(share.windowPerLoop * loops) ports in flight"
                + " (\(share.windowPerLoop) per loop), up to \(share.capacityPerLoop * loops) with stalled ports")
        }
        var text = parts.joined(separator: "; ") + "; \(loops) loop\(loops == 1 ? "" : "s"); \(budget)"
        if let requestedConcurrency {
            text += "; --concurrency \(requestedConcurrency) cut to fit the descriptor limit"
        }
        return text
    }
}

/// Counts and timing of a finished sweep.
public struct SweepSummary: Sendable {
    public var counts: [Outcome: Int]
    public var total: Int
    public var elapsed: Duration
    /// Ports whose listener met EADDRINUSE in the main pass and were tested again, one at a time.
    public var retried: Int
    public var plan: SweepPlan
    /// Stopped short by `Sweep.interrupt()` (a signal): the counts cover the ports tested until then.
    public var interrupted = false
    /// Tests (port and protocol) left without a verdict by an interruption.
    public var untested = 0

    public var portsPerSecond: Double {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return seconds > 0 ? Double(total) / seconds : 0
    }

    public var allPassed: Bool { counts.keys.allSatisfy(\.isPass) }
}

/// Why a sweep could not run or finish: a problem on this machine or in the configuration, never a port's result.
public enum SweepError: Error, Sendable, CustomStringConvertible {
    case noPorts
    case familyMismatch(bind: IPAddress, target: IPAddress)
    case bindAddressNotLocal(IPAddress, errno: Int32)
    case local(LocalFailure)
    case alreadyStarted
    case noRoute(IPAddress, errno: Int32)

    public var description: String {
        switch self {
        case .noPorts: return "no ports to sweep"
        case .familyMismatch(let bind, let target):
            return "bind address \(bind) and target \(target) are not of the same IP family"
        case .bindAddressNotLocal(let ip, let errno):
            return "cannot bind to \(ip): \(UVError.name(ofErrno: errno)) (is it an address of this machine?)"
        case .local(let failure): return "local problem: \(failure)"
        case .alreadyStarted: return "this sweep was already started"
        case .noRoute(let ip, let errno):
            return "local problem: this machine has no route to \(ip) (\(UVError.name(ofErrno: errno))); check the address and the routes"
        }
    }
}
