import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The outbound UDP test: send the sweep's line to TARGET:P from one shared socket and expect the same datagram
/// back from that port (a remote `portsweep listen --reply echo`). Replies are matched to slots by their source
/// port, ICMP errors by the original destination (IP_RECVERR), as in the inbound test; the line is resent at
/// every retransmit interval, and duplicate echoes are harmless.
///
/// SEND: an ICMP error came back (port unreachable: nothing there, or a firewall's reject). RECV: nothing came
/// back; from this side a lost line and a lost echo look the same. USED: an answer that is not our echo.
final class OutboundUDPProbe: PortProbe, UDPSlabDelegate {
    enum Phase: UInt8 {
        case idle
        /// The line is out; waiting for the echo. Deadline miss: RECV (USED if only something else answered).
        case waiting
        case done
    }

    struct Slot {
        var phase = Phase.idle
        var port: UInt16 = 0
        var wrongAnswer = false
    }

    let transport = Transport.udp
    unowned(unsafe) let scheduler: ShardScheduler
    private var slots: [Slot]
    /// The shared socket, in slot 0.
    private let client: UDPSlab
    private var clientClosed: (() -> Void)?
    /// The slot testing each port, -1 for none.
    private var portSlot = [Int32](repeating: -1, count: 65536)
    private let target: PortAddress
    private let line: WireText
    /// What must come back: the line itself from an echo.
    private let answer: WireText

    /// Loop thread only. Opens the shared socket; throws when it cannot (descriptors exhausted).
    init(scheduler: ShardScheduler, capacity: Int, target: IPAddress, line: WireText, answer: WireText, window: Int) throws(UVError) {
        self.scheduler = scheduler
        self.line = line
        self.answer = answer
        slots = [Slot](repeating: Slot(), count: capacity)
        client = UDPSlab(on: scheduler.loop, capacity: 1, batchedReceive: true)
        self.target = PortAddress(target)
        client.delegate = self
        try client.openSharedClient(family: target.family, window: window)
    }

    // MARK: PortProbe

    func start(_ slot: Int32, port: UInt16) {
        slots[Int(slot)] = Slot(phase: .waiting, port: port)
        portSlot[Int(port)] = slot
        scheduler.beginStep(slot)
        send(slot)
    }

    func retransmit(_ slot: Int32) {
        if slots[Int(slot)].phase == .waiting { send(slot) }
    }

    func expire(_ slot: Int32) {
        guard slots[Int(slot)].phase == .waiting else { return }
        if slots[Int(slot)].wrongAnswer { finish(slot, .used, errno: EBADMSG) } else { finish(slot, .recv, errno: ETIMEDOUT) }
    }

    func abandon(_ slot: Int32) {
        guard slots[Int(slot)].phase != .done else { return }
        slots[Int(slot)].phase = .done
        release(slot)
    }

    func close(then closed: @escaping () -> Void) {
        clientClosed = closed
        client.close(0)
    }

    // MARK: verdicts

    private func finish(_ slot: Int32, _ outcome: Outcome, errno: Int32 = 0) {
        guard slots[Int(slot)].phase == .waiting else { return }
        slots[Int(slot)].phase = .done
        scheduler.finish(slot, outcome, errno: errno)
        release(slot)
    }

    /// A slot holds no handle of its own: it is free as soon as it has its verdict.
    private func release(_ slot: Int32) {
        let s = Int(slot)
        if portSlot[Int(slots[s].port)] == slot { portSlot[Int(slots[s].port)] = -1 }
        slots[s].phase = .idle
        scheduler.release(slot)
    }

    private func send(_ slot: Int32) {
        let port = slots[Int(slot)].port
        for _ in 0..<2 {
            let error = client.trySend(line, on: 0, to: target, port: port)
            // A pending ICMP error of another port is reported by the next send: attribute it, then send again.
            guard let error else { return }
            if error.kind == .refused || error.kind == .unreachable {
                drainErrorQueue()
                guard slots[Int(slot)].phase == .waiting else { return }
                continue
            }
            // EAGAIN (send buffer full) waits for the next retransmit; EPERM/EACCES is this machine's own
            // firewall refusing to send: not the path's verdict.
            if error.kind == .privilege { finish(slot, .erro, errno: error.errno) }
            return
        }
    }

    // MARK: callbacks

    func received(_ slab: UDPSlab, _ slot: Int32, _ bytes: ReceivedBytes, from peer: DatagramPeer) {
        let slot = portSlot[Int(peer.port)]
        guard slot >= 0, slots[Int(slot)].phase == .waiting else { return }
        if answer.isExactly(bytes) { finish(slot, .pass) } else { slots[Int(slot)].wrongAnswer = true }
    }

    func receiveFailed(_ slab: UDPSlab, _ slot: Int32, error: UVError) { drainErrorQueue() }

    func closed(_ slab: UDPSlab, _ slot: Int32) {
        let closed = clientClosed
        clientClosed = nil
        closed?()
    }

    private func drainErrorQueue() {
        client.readErrorQueue(0) { port, errno in
            let slot = portSlot[Int(port)]
            if slot >= 0 { finish(slot, .send, errno: errno) }
        }
    }
}
