import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The outbound TCP test: connect to TARGET:P (a remote `portsweep listen --reply echo`), send the sweep's line
/// and expect the same bytes back. No listener here: one client socket per port, closed with a reset so that
/// neither this host nor a NAT on the way keeps the connection around.
///
/// From this side a lost line and a lost echo look the same (RECV); an answer that is not our echo, or a clean
/// close before it, means something other than portsweep holds the port there (USED).
final class OutboundTCPProbe: PortProbe, TCPSlabDelegate {
    enum Phase: UInt8 {
        case idle
        /// Connecting. Deadline miss: FAIL.
        case connecting
        /// Connected, line sent, waiting for the echo. Deadline miss: RECV.
        case echoing
        /// Verdict given; the handle is closing.
        case done
    }

    struct Slot {
        var phase = Phase.idle
        var open = false
        var connected = false
        var matched: UInt8 = 0
    }

    let transport = Transport.tcp
    unowned(unsafe) let scheduler: ShardScheduler
    private var slots: [Slot]
    private let clients: TCPSlab
    private let target: PortAddress
    private let line: WireText
    /// What must come back: the line itself from an echo.
    private let answer: WireText

    init(scheduler: ShardScheduler, capacity: Int, target: IPAddress, line: WireText, answer: WireText) {
        precondition(answer.count <= Int(UInt8.max), "the answer's progress is counted in a byte")
        self.scheduler = scheduler
        self.line = line
        self.answer = answer
        slots = [Slot](repeating: Slot(), count: capacity)
        clients = TCPSlab(on: scheduler.loop, capacity: capacity, connects: true, writes: true)
        self.target = PortAddress(target)
        clients.delegate = self
    }

    // MARK: PortProbe

    func start(_ slot: Int32, port: UInt16) {
        slots[Int(slot)] = Slot(phase: .connecting)
        if let error = clients.open(slot, family: target.ip.family) { return connectFailed(slot, error) }
        slots[Int(slot)].open = true
        scheduler.beginStep(slot)
        if let error = clients.connect(slot, to: target, port: port) { connectFailed(slot, error) }
    }

    func expire(_ slot: Int32) {
        switch slots[Int(slot)].phase {
        case .connecting: finish(slot, .fail, errno: ETIMEDOUT)
        case .echoing: finish(slot, .recv, errno: ETIMEDOUT)
        case .idle, .done: break
        }
    }

    func abandon(_ slot: Int32) {
        guard slots[Int(slot)].phase != .done else { return }
        slots[Int(slot)].phase = .done
        close(slot)
    }

    // MARK: verdicts

    private func finish(_ slot: Int32, _ outcome: Outcome, errno: Int32 = 0) {
        guard slots[Int(slot)].phase != .done else { return }
        slots[Int(slot)].phase = .done
        scheduler.finish(slot, outcome, errno: errno)
        close(slot)
    }

    private func connectFailed(_ slot: Int32, _ error: UVError) {
        switch error.kind {
        // Refused: nothing listens there, or a firewall on the way rejects with a reset; from here the two look
        // the same (the README says to compare with the ports the far listen reports it could not hold).
        case .refused, .unreachable, .timedOut: finish(slot, .fail, errno: error.errno)
        case .localShortage:
            guard slots[Int(slot)].phase != .done else { return }
            slots[Int(slot)].phase = .done
            scheduler.requeue(slot, errno: error.errno)
            close(slot)
        // EACCES/EPERM from connect: this machine's own firewall refused to send. Not the path's verdict.
        default: finish(slot, .erro, errno: error.errno)
        }
    }

    private func close(_ slot: Int32) {
        let s = Int(slot)
        guard slots[s].open else { return scheduler.release(slot) }
        slots[s].open = false
        clients.close(slot, reset: slots[s].connected)
    }

    func closed(_ slab: TCPSlab, _ slot: Int32) {
        slots[Int(slot)].phase = .idle
        scheduler.release(slot)
    }

    // MARK: the exchange

    func incomingConnection(_ slab: TCPSlab, _ slot: Int32, error: UVError?) {}

    func connected(_ slab: TCPSlab, _ slot: Int32, error: UVError?) {
        let s = Int(slot)
        guard slots[s].phase == .connecting else { return }  // ECANCELED after a close lands here too
        if let error { return connectFailed(slot, error) }
        slots[s].phase = .echoing
        slots[s].connected = true
        scheduler.beginStep(slot)
        if let error = clients.write(line, on: slot) { return finish(slot, .recv, errno: error.errno) }
        _ = clients.startReading(slot)
    }

    func received(_ slab: TCPSlab, _ slot: Int32, _ bytes: ReceivedBytes) {
        let s = Int(slot)
        guard slots[s].phase == .echoing else { return }
        guard answer.matches(bytes, at: &slots[s].matched) else { return finish(slot, .used, errno: EBADMSG) }
        if Int(slots[s].matched) == answer.count { finish(slot, .pass) }
    }

    func readEnded(_ slab: TCPSlab, _ slot: Int32, error: UVError?) {
        guard slots[Int(slot)].phase == .echoing else { return }
        // A clean close before the echo is an answer from the far end, not from the path: another program.
        // A reset may come from a middlebox as well: the echo did not make it.
        if let error { finish(slot, .recv, errno: error.errno) } else { finish(slot, .used, errno: ENOTCONN) }
    }
}
