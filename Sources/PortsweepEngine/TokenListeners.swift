public import UVLoop
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Which ports heard a checker's line, over every loop: written on the loops, read by the task that combines
/// the checker's records.
public final class HeardPorts: Sendable {
    private let heard = Mutex([UInt8](repeating: 0, count: 65536))

    public init() {}

    func mark(_ port: UInt16, _ transport: Transport) {
        heard.withLock { $0[Int(port)] |= transport == .tcp ? 1 : 2 }
    }

    public func contains(_ port: UInt16, _ transport: Transport) -> Bool {
        heard.withLock { $0[Int(port)] & (transport == .tcp ? 1 : 2) != 0 }
    }
}

/// The caller's half of a sweep through a checker (`sweep --via`), on one loop: a TCP listener and a UDP
/// socket on each port of a window, that answer the checker's line (with this sweep's token) and note that
/// they heard it. Anything else that reaches them (a scanner, a stranger's probe) is counted and dropped:
/// never answered, never held past a deadline, at most `maxConnections` held at once.
///
/// Loop-bound: made, used and closed on its loop only (`loop.run`, `loop.execute`); Sendable so that a task
/// can hold it between those calls, as NIOLoopBound does.
public final class TokenListeners: TCPListenSocketDelegate, ByteStreamDelegate, UDPSlabDelegate, @unchecked Sendable {
    public let loop: EventLoop
    private let bind: IPAddress
    private let line: [UInt8]
    private let answer: [UInt8]
    private let lineText: WireText
    private let answerText: WireText
    private let heard: HeardPorts
    private var listeners: [UInt16: TCPListenSocket] = [:]
    private let datagrams: UDPSlab
    private var slotPort: [Int32: UInt16] = [:]
    private var freeSlots: [Int32]
    private var connections: [ObjectIdentifier: Accepted] = [:]
    private var sweeper: LoopTimer?
    private var listenersClosing = 0
    private var onAllClosed: (() -> Void)?
    /// What to tell when a slot's close completes (a window waiting for its descriptors).
    private var slotClosed: [Int32: () -> Void] = [:]
    private let connectionDeadline: UInt64
    /// Connections and datagrams that were not the checker's line.
    public private(set) var strangers = 0
    /// Connections held at once per loop (the checker keeps about a thousand probes in flight).
    public static let maxConnections = 2048

    private struct Accepted {
        let stream: ByteStream
        var received: [UInt8] = []
        let opened: UInt64
    }

    /// `capacity`: UDP sockets at most (the window's size). `deadline`: how long an accepted connection may
    /// take to send the line.
    public init(on loop: EventLoop, bind: IPAddress, token: String, capacity: Int, deadline: Duration, heard: HeardPorts) {
        self.loop = loop
        self.bind = bind
        line = BulkSweepWire.probeLine(token: token)
        answer = BulkSweepWire.answerLine(token: token)
        lineText = WireText(copying: line)
        answerText = WireText(copying: answer)
        self.heard = heard
        datagrams = UDPSlab(on: loop, capacity: max(1, capacity))
        freeSlots = (0..<Int32(max(1, capacity))).reversed()
        let (seconds, atto) = deadline.components
        connectionDeadline = UInt64(seconds) * 1_000_000_000 + UInt64(atto / 1_000_000_000)
        datagrams.delegate = self
    }

    /// Opens the listeners of `ports` for `transports`; returns the ports that could not be held, with the
    /// errno (EADDRINUSE: another program; EACCES: a privileged port; EMFILE: out of descriptors).
    public func open(_ ports: [UInt16], transports: [Transport]) -> [(UInt16, Transport, Int32)] {
        loop.preconditionInEventLoop()
        startSweeper()
        var failed: [(UInt16, Transport, Int32)] = []
        for port in ports {
            if transports.contains(.tcp) {
                do {
                    let listener = try TCPListenSocket(SocketAddress(bind, port: port), on: loop)
                    listener.delegate = self
                    listeners[port] = listener
                } catch {
                    failed.append((port, .tcp, error.errno))
                }
            }
            if transports.contains(.udp) {
                if let errno = openDatagram(port) { failed.append((port, .udp, errno)) }
            }
        }
        return failed
    }

    private func openDatagram(_ port: UInt16) -> Int32? {
        // More ports than slots is the caller's mistake, not a lack of descriptors: say so as ENOSPC.
        guard let slot = freeSlots.popLast() else { return ENOSPC }
        if let error = datagrams.open(slot) {
            freeSlots.append(slot)
            return error.errno
        }
        if let error = datagrams.bind(slot, to: PortAddress(bind), port: port) ?? datagrams.startReceiving(slot) {
            datagrams.close(slot)  // the slot is freed in `closed`
            return error.errno
        }
        slotPort[slot] = port
        return nil
    }

    /// Closes every listener of `ports` (the window the checker is done with); `then` runs once their
    /// descriptors are released, so that the next window finds them free.
    public func close(_ ports: [UInt16], then: (() -> Void)? = nil) {
        loop.preconditionInEventLoop()
        let set = Set(ports)
        var pending = 1
        func one() {
            pending -= 1
            if pending == 0 { then?() }
        }
        for port in ports {
            guard let listener = listeners.removeValue(forKey: port) else { continue }
            listenersClosing += 1
            pending += 1
            listener.close { [self] in
                listenersClosing -= 1
                one()
                checkAllClosed()
            }
        }
        for (slot, port) in slotPort where set.contains(port) {
            slotPort[slot] = nil
            pending += 1
            slotClosed[slot] = one
            datagrams.close(slot)
        }
        one()
    }

    /// Closes everything, connections included; `then` runs once every handle is released.
    public func closeAll(then: @escaping () -> Void) {
        loop.preconditionInEventLoop()
        close(Array(listeners.keys) + Array(slotPort.values))
        for connection in connections.values { connection.stream.close(reset: true) }
        sweeper?.close()
        sweeper = nil
        // The slab must outlive its open slots, and this object its handles: `then` waits for every close.
        onAllClosed = then
        checkAllClosed()
    }

    private func checkAllClosed() {
        guard let then = onAllClosed, datagrams.openSlots == 0, connections.isEmpty, listenersClosing == 0 else { return }
        onAllClosed = nil
        then()
    }

    // MARK: TCP

    public func accepted(_ stream: ByteStream, on listener: TCPListenSocket) {
        guard connections.count < TokenListeners.maxConnections else {
            strangers += 1
            return stream.close(reset: true)
        }
        stream.tag = Int(listener.port)
        stream.readLimit = line.count
        stream.delegate = self
        connections[ObjectIdentifier(stream)] = Accepted(stream: stream, opened: MonotonicClock.nanoseconds)
        stream.startReading()
    }

    public func acceptFailed(_ error: UVError, on listener: TCPListenSocket) {}

    public func received(_ bytes: UnsafeRawBufferPointer, on stream: ByteStream) {
        let id = ObjectIdentifier(stream)
        guard var connection = connections[id] else { return }
        connection.received += bytes
        guard line.starts(with: connection.received) else {
            strangers += 1
            return stream.close(reset: true)
        }
        connections[id] = connection
        guard connection.received.count == line.count else { return }
        stream.stopReading()
        heard.mark(UInt16(stream.tag), .tcp)
        if case .failure = stream.write(answer) { stream.close(reset: true) }
        else if !stream.isWriting { stream.close() }
    }

    public func ended(_ stream: ByteStream, error: UVError?) { stream.close(reset: error != nil) }

    public func wrote(_ bytes: Int, on stream: ByteStream, error: UVError?) {
        if !stream.isWriting { stream.close() }
    }

    public func closed(_ stream: ByteStream) {
        connections[ObjectIdentifier(stream)] = nil
        checkAllClosed()
    }

    /// Connections that have not said the line by their deadline are closed (a silent stranger must not hold
    /// a descriptor for ever).
    private func startSweeper() {
        guard sweeper == nil else { return }
        let timer = LoopTimer(on: loop) { [weak self] in self?.expire() }
        timer.start(after: .milliseconds(250), repeat: .milliseconds(250))
        timer.unref()
        sweeper = timer
    }

    private func expire() {
        let now = MonotonicClock.nanoseconds
        for connection in connections.values where now - connection.opened > connectionDeadline && !connection.stream.isClosing {
            strangers += 1
            connection.stream.close(reset: true)
        }
    }

    // MARK: UDP

    public func received(_ slab: UDPSlab, _ slot: Int32, _ bytes: ReceivedBytes, from peer: DatagramPeer) {
        guard let port = slotPort[slot] else { return }
        // Only the exact line is answered, with a line of the same length: nothing here amplifies.
        guard lineText.isExactly(bytes) else {
            strangers += 1
            return
        }
        heard.mark(port, .udp)
        _ = slab.trySend(answerText, on: slot, to: peer)
    }

    public func receiveFailed(_ slab: UDPSlab, _ slot: Int32, error: UVError) {}

    public func closed(_ slab: UDPSlab, _ slot: Int32) {
        slotPort[slot] = nil
        freeSlots.append(slot)
        slotClosed.removeValue(forKey: slot)?()
        checkAllClosed()
    }
}
