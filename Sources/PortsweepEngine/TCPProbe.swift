import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The Incoming Port Tester's TCP test, as a callback state machine per slot: listen on BIND:P, connect to
/// TARGET:P, the client sends `client -> server\n`, the server checks it and replies `server -> client\n`, the
/// client checks that. The slot's three sockets live in three slabs of the loop kit (listeners, clients,
/// accepted servers), under the same slot number.
final class TCPProbe: PortProbe, TCPSlabDelegate {
    enum Phase: UInt8 {
        case idle
        /// Listener up, client connecting. Deadline miss: FAIL.
        case connecting
        /// Connected; the client's line is on its way to the server. Deadline miss: SEND.
        case sending
        /// The server has the line; its reply is on its way. Deadline miss: RECV.
        case replying
        /// Verdict given; handles closing.
        case done
    }

    struct Slot {
        var phase = Phase.idle
        var port: UInt16 = 0
        var open: UInt8 = 0
        var closing: UInt8 = 0
        var serverMatched: UInt8 = 0
        var clientMatched: UInt8 = 0
        var accepted = false
        var connected = false
    }

    static let listenerBit: UInt8 = 1, clientBit: UInt8 = 2, serverBit: UInt8 = 4

    static let request = WireText("client -> server\n")
    static let reply = WireText("server -> client\n")

    let transport = Transport.tcp
    unowned(unsafe) let scheduler: ShardScheduler
    private var slots: [Slot]
    private let listeners: TCPSlab
    private let clients: TCPSlab
    private let servers: TCPSlab
    /// Ports tested again because the sweep itself spoiled the test (its own client port, or a descriptor
    /// shortage), with their attempts.
    private var retests: [UInt16: Int] = [:]
    private let bindAddress: PortAddress
    private let targetAddress: PortAddress

    /// Every port of the sweep (all shards): a client port among them can clash with another port's test.
    private let swept: PortSet

    init(scheduler: ShardScheduler, capacity: Int, bind: IPAddress, target: IPAddress, swept: PortSet) {
        self.scheduler = scheduler
        self.swept = swept
        slots = [Slot](repeating: Slot(), count: capacity)
        listeners = TCPSlab(on: scheduler.loop, capacity: capacity)
        clients = TCPSlab(on: scheduler.loop, capacity: capacity, connects: true, writes: true)
        servers = TCPSlab(on: scheduler.loop, capacity: capacity, writes: true)
        bindAddress = PortAddress(bind)
        targetAddress = PortAddress(target)
        listeners.delegate = self
        clients.delegate = self
        servers.delegate = self
    }

    // MARK: PortProbe

    func start(_ slot: Int32, port: UInt16) {
        let s = Int(slot)
        slots[s] = Slot(phase: .connecting, port: port)

        if let error = listeners.open(slot) { return setupFailed(slot, error) }
        slots[s].open |= TCPProbe.listenerBit
        if let error = listeners.bind(slot, to: bindAddress, port: port) ?? listeners.listen(slot, backlog: 1) {
            return setupFailed(slot, error)
        }

        if let error = clients.open(slot, family: targetAddress.ip.family) { return setupFailed(slot, error) }
        slots[s].open |= TCPProbe.clientBit
        // SO_REUSEADDR before connect: the client's local port, later in TIME_WAIT, must never block a listener
        // of this sweep on that port.
        clients.set(.reuseAddress, 1, on: slot)
        scheduler.beginStep(slot)
        if let error = clients.connect(slot, to: targetAddress, port: port) { connectFailed(slot, error) }
    }

    func expire(_ slot: Int32) {
        switch slots[Int(slot)].phase {
        case .connecting: finish(slot, .fail, errno: ETIMEDOUT)
        case .sending: finish(slot, .send, errno: ETIMEDOUT)
        case .replying: finish(slot, .recv, errno: ETIMEDOUT)
        case .idle, .done: break
        }
    }

    func abandon(_ slot: Int32) {
        guard slots[Int(slot)].phase != .done else { return }
        slots[Int(slot)].phase = .done
        closeAll(slot)
    }

    // MARK: verdicts

    /// `suspect`: the verdict may come from this machine rather than the path (see `readEnded`).
    private func finish(_ slot: Int32, _ outcome: Outcome, errno: Int32 = 0, suspect: Bool = false) {
        let s = Int(slot)
        guard slots[s].phase != .done else { return }
        slots[s].phase = .done
        if !outcome.isPass && retests[slots[s].port, default: 0] < 3
            && (suspect || scheduler.overlapsShortage(slot) || spoiledBySweep(slot, errno: errno)) {
            retests[slots[s].port, default: 0] += 1
            scheduler.retry(slot)
        } else {
            scheduler.finish(slot, outcome, errno: errno)
        }
        closeAll(slot)
    }

    /// Whether the sweep's own client, not the path under test, spoiled this port's test. Through a NAT that
    /// forwards TARGET:P back here (the hairpin of a router's port forward) the client's ephemeral port Y can be
    /// a port of the sweep too: if Y's test had used P as its client port, the router's connection tracking
    /// still holds (here:P → router:Y) and takes the new (here:Y → router:P) for its reply direction, and the
    /// SYN is refused; a client whose port is P itself meets its own SYN. Such a port is tested again with a new
    /// client port. Only checked for a port that did not pass, so the common path pays no syscall.
    private func spoiledBySweep(_ slot: Int32, errno: Int32) -> Bool {
        let s = Int(slot)
        guard slots[s].open & TCPProbe.clientBit != 0 else { return false }
        guard let local = clients.localPort(slot), local != 0 else { return false }
        return local == slots[s].port || (errno == ECONNREFUSED && swept.contains(local))
    }

    private func requeue(_ slot: Int32, errno: Int32) {
        guard slots[Int(slot)].phase != .done else { return }
        slots[Int(slot)].phase = .done
        scheduler.requeue(slot, errno: errno)
        closeAll(slot)
    }

    /// The listener or the client socket could not be set up.
    private func setupFailed(_ slot: Int32, _ error: UVError) {
        switch error.kind {
        case .inUse: finish(slot, .used, errno: error.errno)
        case .privilege: finish(slot, .sudo, errno: error.errno)
        // EADDRNOTAVAIL from bind means the bind address is not ours: a configuration error checked up front.
        case .localShortage where error != .addressNotAvailable: requeue(slot, errno: error.errno)
        default: finish(slot, .erro, errno: error.errno)
        }
    }

    private func connectFailed(_ slot: Int32, _ error: UVError) {
        switch error.kind {
        case .refused, .unreachable, .timedOut: finish(slot, .fail, errno: error.errno)
        case .localShortage: requeue(slot, errno: error.errno)
        default: finish(slot, .erro, errno: error.errno)
        }
    }

    // MARK: handles

    private func close(_ slot: Int32, _ bit: UInt8) {
        let s = Int(slot)
        guard slots[s].open & bit != 0 else { return }
        slots[s].open &= ~bit
        slots[s].closing += 1
        switch bit {
        case TCPProbe.listenerBit: listeners.close(slot)
        // An RST close: faster than a FIN, and it leaves no TIME_WAIT behind.
        case TCPProbe.clientBit: clients.close(slot, reset: slots[s].connected)
        default: servers.close(slot)
        }
    }

    private func closeAll(_ slot: Int32) {
        close(slot, TCPProbe.clientBit)
        close(slot, TCPProbe.serverBit)
        close(slot, TCPProbe.listenerBit)
        if slots[Int(slot)].closing == 0 { scheduler.release(slot) }
    }

    func closed(_ slab: TCPSlab, _ slot: Int32) {
        let s = Int(slot)
        slots[s].closing -= 1
        if slots[s].closing == 0 && slots[s].open == 0 {
            slots[s].phase = .idle
            scheduler.release(slot)
        }
    }

    // MARK: the exchange

    func incomingConnection(_ slab: TCPSlab, _ slot: Int32, error: UVError?) {
        let s = Int(slot)
        guard slots[s].phase == .connecting || slots[s].phase == .sending, !slots[s].accepted else { return }
        if let error {
            return error.kind == .localShortage ? requeue(slot, errno: error.errno) : finish(slot, .erro, errno: error.errno)
        }
        if let error = servers.open(slot) { return finish(slot, .erro, errno: error.errno) }
        slots[s].open |= TCPProbe.serverBit
        if let error = servers.accept(slot, from: listeners, slot) { return finish(slot, .erro, errno: error.errno) }
        slots[s].accepted = true
        close(slot, TCPProbe.listenerBit)  // one connection per port
        _ = servers.startReading(slot)
    }

    func connected(_ slab: TCPSlab, _ slot: Int32, error: UVError?) {
        let s = Int(slot)
        guard slots[s].phase == .connecting else { return }  // ECANCELED after a close lands here too
        if let error { return connectFailed(slot, error) }
        slots[s].phase = .sending
        slots[s].connected = true
        scheduler.beginStep(slot)
        if let error = clients.write(TCPProbe.request, on: slot) { return finish(slot, .send, errno: error.errno) }
        _ = clients.startReading(slot)
    }

    func received(_ slab: TCPSlab, _ slot: Int32, _ bytes: ReceivedBytes) {
        if slab === servers { serverReceived(slot, bytes) } else { clientReceived(slot, bytes) }
    }

    func readEnded(_ slab: TCPSlab, _ slot: Int32, error: UVError?) {
        let s = Int(slot)
        let errno = error?.errno ?? 0
        if slab === servers {
            guard slots[s].phase == .sending else { return }
            return finish(slot, .send, errno: errno)
        }
        let phase = slots[s].phase
        guard phase == .sending || phase == .replying else { return }
        // Reset before our listener accepted: that is what libuv's answer to EMFILE in accept looks like
        // (it accepts and closes pending connections). Suspect; the port is tested again.
        let suspect = phase == .sending && !slots[s].accepted
        finish(slot, phase == .sending ? .send : .recv, errno: errno, suspect: suspect)
    }

    private func serverReceived(_ slot: Int32, _ bytes: ReceivedBytes) {
        let s = Int(slot)
        guard slots[s].phase == .sending else { return }
        guard TCPProbe.request.matches(bytes, at: &slots[s].serverMatched) else {
            return finish(slot, .send, errno: EBADMSG)
        }
        guard Int(slots[s].serverMatched) == TCPProbe.request.count else { return }
        slots[s].phase = .replying
        scheduler.beginStep(slot)
        if let error = servers.write(TCPProbe.reply, on: slot) { finish(slot, .recv, errno: error.errno) }
    }

    private func clientReceived(_ slot: Int32, _ bytes: ReceivedBytes) {
        let s = Int(slot)
        let phase = slots[s].phase
        guard phase == .sending || phase == .replying else { return }
        guard TCPProbe.reply.matches(bytes, at: &slots[s].clientMatched) else {
            return finish(slot, .recv, errno: EBADMSG)
        }
        if Int(slots[s].clientMatched) == TCPProbe.reply.count { finish(slot, .pass) }
    }
}
