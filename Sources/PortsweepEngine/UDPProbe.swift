import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The Incoming Port Tester's UDP test: a server socket bound on BIND:P; the client sends `client -> server\n` to
/// TARGET:P; the server checks it and replies `server -> client\n` to the sender; the client checks that.
///
/// One shared client socket per shard sends to every port and receives every reply (recvmmsg, a large receive
/// buffer): a socket per port would cost a descriptor, a bind and an epoll registration each. Replies are matched
/// to slots by their source port; ICMP port-unreachable errors by the original destination read from the socket's
/// error queue (IP_RECVERR). Datagrams get lost under load even on loopback, so the client resends at every
/// retransmit interval of a step, and duplicates are harmless.
final class UDPProbe: PortProbe, UDPSlabDelegate {
    enum Phase: UInt8 {
        case idle
        /// Server bound; the client's line is on its way. Deadline miss: SEND.
        case sending
        /// The server has the line; its reply is on its way. Deadline miss: RECV.
        case replying
        case done
    }

    struct Slot {
        var phase = Phase.idle
        var port: UInt16 = 0
        var open = false
        var badRequest = false
        var badReply = false
    }

    let transport = Transport.udp
    unowned(unsafe) let scheduler: ShardScheduler
    private var slots: [Slot]
    /// The server socket of each slot.
    private let servers: UDPSlab
    /// The shared client socket, in slot 0.
    private let client: UDPSlab
    private var clientClosed: (() -> Void)?
    /// The slot testing each port, -1 for none: replies and ICMP errors name only the port.
    private var portSlot = [Int32](repeating: -1, count: 65536)
    private let bindAddress: PortAddress
    private let targetAddress: PortAddress

    /// Loop thread only. Opens the shared client socket; throws when it cannot (descriptors exhausted).
    init(scheduler: ShardScheduler, capacity: Int, bind: IPAddress, target: IPAddress, window: Int) throws(UVError) {
        self.scheduler = scheduler
        slots = [Slot](repeating: Slot(), count: capacity)
        servers = UDPSlab(on: scheduler.loop, capacity: capacity)
        client = UDPSlab(on: scheduler.loop, capacity: 1, batchedReceive: true)
        bindAddress = PortAddress(bind)
        targetAddress = PortAddress(target)
        servers.delegate = self
        client.delegate = self
        try client.openSharedClient(family: target.family, window: window)
    }

    // MARK: PortProbe

    func start(_ slot: Int32, port: UInt16) {
        let s = Int(slot)
        slots[s] = Slot(phase: .sending, port: port)
        if let error = servers.open(slot) { return setupFailed(slot, error) }
        slots[s].open = true
        if let error = servers.bind(slot, to: bindAddress, port: port) ?? servers.startReceiving(slot) {
            return setupFailed(slot, error)
        }
        portSlot[Int(port)] = slot
        scheduler.beginStep(slot)
        send(slot)
    }

    func retransmit(_ slot: Int32) {
        let phase = slots[Int(slot)].phase
        if phase == .sending || phase == .replying { send(slot) }
    }

    func expire(_ slot: Int32) {
        let s = Int(slot)
        switch slots[s].phase {
        case .sending: finish(slot, .send, errno: slots[s].badRequest ? EBADMSG : ETIMEDOUT)
        case .replying: finish(slot, .recv, errno: slots[s].badReply ? EBADMSG : ETIMEDOUT)
        case .idle, .done: break
        }
    }

    func abandon(_ slot: Int32) {
        guard slots[Int(slot)].phase != .done else { return }
        slots[Int(slot)].phase = .done
        close(slot)
    }

    func close(then closed: @escaping () -> Void) {
        clientClosed = closed
        client.close(0)
    }

    // MARK: verdicts and handles

    private func finish(_ slot: Int32, _ outcome: Outcome, errno: Int32 = 0) {
        guard slots[Int(slot)].phase != .done else { return }
        slots[Int(slot)].phase = .done
        scheduler.finish(slot, outcome, errno: errno)
        close(slot)
    }

    private func setupFailed(_ slot: Int32, _ error: UVError) {
        let s = Int(slot)
        guard slots[s].phase != .done else { return }
        switch error.errno {
        case EADDRINUSE: finish(slot, .used, errno: error.errno)
        case EACCES, EPERM: finish(slot, .sudo, errno: error.errno)
        case EMFILE, ENFILE, ENOBUFS, ENOMEM:
            slots[s].phase = .done
            scheduler.requeue(slot, errno: error.errno)
            close(slot)
        default: finish(slot, .erro, errno: error.errno)
        }
    }

    private func close(_ slot: Int32) {
        let s = Int(slot)
        if portSlot[Int(slots[s].port)] == slot { portSlot[Int(slots[s].port)] = -1 }
        guard slots[s].open else { return scheduler.release(slot) }
        slots[s].open = false
        servers.close(slot)
    }

    func closed(_ slab: UDPSlab, _ slot: Int32) {
        if slab === client {
            let closed = clientClosed
            clientClosed = nil
            return closed?() ?? ()
        }
        slots[Int(slot)].phase = .idle
        scheduler.release(slot)
    }

    /// Sends the client's line to TARGET:port. A full send buffer is not an error: the next retransmit tries again.
    private func send(_ slot: Int32) {
        let port = slots[Int(slot)].port
        for _ in 0..<2 {
            let error = client.trySend(TCPProbe.request, on: 0, to: targetAddress, port: port)
            // A pending ICMP error of another port is reported by the next send: attribute it, then send again.
            guard let error, error.kind == .refused || error.kind == .unreachable else { return }
            drainErrorQueue()
            guard slots[Int(slot)].phase == .sending || slots[Int(slot)].phase == .replying else { return }
        }
    }

    // MARK: callbacks

    func received(_ slab: UDPSlab, _ slot: Int32, _ bytes: ReceivedBytes, from peer: DatagramPeer) {
        if slab === client { clientReceived(bytes, from: peer) } else { serverReceived(slot, bytes, from: peer) }
    }

    func receiveFailed(_ slab: UDPSlab, _ slot: Int32, error: UVError) {
        if slab === client { drainErrorQueue() }
    }

    private func serverReceived(_ slot: Int32, _ bytes: ReceivedBytes, from peer: DatagramPeer) {
        let s = Int(slot)
        guard slots[s].phase == .sending || slots[s].phase == .replying else { return }
        guard TCPProbe.request.isExactly(bytes) else {
            slots[s].badRequest = true
            return
        }
        if slots[s].phase == .sending {
            slots[s].phase = .replying
            scheduler.beginStep(slot)
        }
        // Every copy of the request gets a reply: the first reply may be the one that was lost.
        _ = servers.trySend(TCPProbe.reply, on: slot, to: peer)
    }

    private func clientReceived(_ bytes: ReceivedBytes, from peer: DatagramPeer) {
        let slot = portSlot[Int(peer.port)]
        guard slot >= 0, slots[Int(slot)].phase == .replying || slots[Int(slot)].phase == .sending else { return }
        if TCPProbe.reply.isExactly(bytes) {
            finish(slot, .pass)
        } else {
            slots[Int(slot)].badReply = true
        }
    }

    /// Reads the client socket's error queue: each entry is an ICMP error for a datagram we sent, with that
    /// datagram's destination. A port-unreachable for a port still waiting for the server is SEND, with the reason.
    private func drainErrorQueue() {
        client.readErrorQueue(0) { port, errno in
            let slot = portSlot[Int(port)]
            if slot >= 0, slots[Int(slot)].phase == .sending { finish(slot, .send, errno: errno) }
        }
    }
}
