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
    /// Inbound (listen here, connect through the target) or outbound (to a remote echo listener at the target).
    public var direction: SweepDirection = .inbound
    /// Port tests started per second over all loops (nil: as fast as the window allows).
    public var rate: Double?
    /// A limit this sweep shares with others (a checker's probes per second over every sweep it runs).
    public var sharedRate: RateLimit?
    /// The order ports are tried in on the wire. Results come out in port order either way.
    public var order: PortOrder = .ascending
    /// Verdicts already known (from an earlier run's JSON Lines, `--resume`): handed out as results in their
    /// place and not tested again.
    public var known: [PortResult] = []
    /// Inbound through a remote checker (`--via`): it probes this host's own address from outside, while the
    /// listeners here tell what reached them. `target` is then the checker's address.
    public var via: Checker?

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

    /// `known`, cut to this sweep's ports and protocols, one verdict per port and protocol (the last one).
    public var knownInScope: [PortResult] {
        var seen: [Int: PortResult] = [:]
        for result in known where transports.contains(result.transport) && ports.contains(result.port) {
            seen[Int(result.port) << 1 | (result.transport == .tcp ? 0 : 1)] = result
        }
        return seen.keys.sorted().map { seen[$0]! }
    }

    /// The ports still to test for `transport`, in the order of `order`.
    public func portsToTest(_ transport: Transport) -> [UInt16] {
        let done = Set(known.lazy.filter { $0.transport == transport }.map(\.port))
        let ports = done.isEmpty ? self.ports.sorted : self.ports.sorted.filter { !done.contains($0) }
        return order.arrange(ports)
    }

    /// The protocols to test, TCP first.
    public var orderedTransports: [Transport] { transports.sorted() }

    /// UDP resends at this interval: the timeout split evenly over the first send and the retries.
    public var retransmitInterval: Duration { timeout / (retries + 1) }
}

/// The order ports are tried in.
public enum PortOrder: Sendable, Equatable {
    case ascending
    /// Shuffled by a generator seeded with `seed`: the same seed, the same order (to reproduce a run).
    case random(seed: UInt64)

    public func arrange(_ ports: [UInt16]) -> [UInt16] {
        guard case .random(let seed) = self else { return ports }
        // Fisher-Yates by hand: the standard library's shuffle may change its draws between releases, and a
        // seed must give the same order on every build.
        var generator = SplitMix64(seed: seed)
        var result = ports
        var i = result.count
        while i > 1 {
            let j = Int(generator.next() % UInt64(i))
            i -= 1
            result.swapAt(i, j)
        }
        return result
    }
}

/// SplitMix64 (Steele, Lea and Flood): a small generator whose sequence depends on the seed alone, unlike the
/// system's. Orders ports; nothing secret.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
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
    /// Outbound, TCP needs only the client, UDP nothing of its own (the loop's shared socket).
    public static func descriptorsPerPort(_ transport: Transport, _ direction: SweepDirection = .inbound) -> Int {
        switch (transport, direction.isOutbound) {
        case (.tcp, false): return 3
        case (.udp, false), (.tcp, true): return 1
        case (.udp, true): return 0
        }
    }

    /// Default active ports per loop: on loopback larger windows only add queueing delay (and, for UDP,
    /// retransmissions).
    public static func defaultWindowPerLoop(_ transport: Transport) -> Int { transport == .tcp ? 256 : 512 }

    public init(configuration: SweepConfiguration, loops: Int, budget: DescriptorBudget) {
        let loops = max(1, loops)
        let transports = configuration.orderedTransports
        // Every protocol gets the same number of slots out of the descriptors.
        let perSlotSet = transports.map { SweepPlan.descriptorsPerPort($0, configuration.direction) }.reduce(0, +)
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
    /// The checker could not be reached, refused, or went away; `untested` names what was left.
    case checker(String, untested: String)

    public var description: String {
        switch self {
        case .noPorts: return "no ports to sweep"
        case .familyMismatch(let bind, let target):
            return "bind address \(bind) and target \(target) are not of the same IP family"
        case .bindAddressNotLocal(let ip, let errno):
            return "cannot bind to \(ip): \(UVError.name(ofErrno: errno)) (is it an address of this machine?)"
        case .local(let failure): return "local problem: \(failure)"
        case .alreadyStarted: return "this sweep was already started"
        case .checker(let what, let untested):
            return untested.isEmpty ? what : "\(what); left untested: \(untested)"
        case .noRoute(let ip, let errno):
            return "local problem: this machine has no route to \(ip) (\(UVError.name(ofErrno: errno))); check the address and the routes"
        }
    }
}
