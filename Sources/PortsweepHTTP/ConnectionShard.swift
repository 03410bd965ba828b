public import UVLoop

/// What a `ConnectionShard` tells the mode that runs it, on the loop thread.
public protocol ConnectionShardDelegate: AnyObject {
    /// A connection ended (its record, with the time it ended).
    func connectionEnded(_ record: ConnectionRecord)
    /// A connection was refused before being served (every slot busy), or accept failed.
    func rejected(port: UInt16, client: SocketAddress?, reason: String)
}

/// One loop's share of a server: TCP listeners on any number of ports, the connections they accept, and the
/// limits of `ConnectionLimits` applied to them. The handler a connection gets (`makeHandler`) decides what is
/// said on it; the shard decides how long it lives:
///
/// - Connections are kept in least-recently-active order (all of the shard's, and per port), so a cap is never
///   a lockout: at `maxConnections` (over all loops and processes, through the shared `ConnectionBudget`) or at
///   `maxPerPort`, the least recently active connection that is not waiting for an answer makes room.
/// - A coarse timer closes idle connections (oldest first, O(closed)), requests that missed their deadline
///   (oldest first, O(missed)), and connections sending below the minimum rate.
/// - Reading pauses while a connection's write queue is above the limit (see `Connection.send`).
///
/// Loop thread only.
public final class ConnectionShard: TCPListenSocketDelegate {
    public let loop: EventLoop
    public let limits: ConnectionLimits
    public unowned(unsafe) var delegate: (any ConnectionShardDelegate)?
    public var counters = ConnectionCounters() {
        didSet { metrics?.record(from: oldValue, to: counters) }
    }
    /// Also counts in swift-metrics (serve's /metrics).
    public var metrics: ConnectionMetrics?
    private let budget: ConnectionBudget
    private let makeHandler: (Connection) -> any ConnectionHandler

    private var listeners: [UInt16: TCPListenSocket] = [:]
    private var connections: [ObjectIdentifier: Connection] = [:]
    private var oldest: Connection?
    private var newest: Connection?
    private struct PortList {
        var count = 0
        unowned(unsafe) var oldest: Connection?
        unowned(unsafe) var newest: Connection?
    }
    private var ports: [UInt16: PortList] = [:]
    private var requestOldest: Connection?
    private var requestNewest: Connection?
    private var timer: LoopTimer?
    private var lastRateCheck: UInt64 = 0
    private var busyCount = 0
    public private(set) var isDraining = false
    private var isStopping = false
    private var onDrained: (() -> Void)?
    private var onStopped: (() -> Void)?
    private var listenersClosing = 0

    /// Loop thread only.
    public init(loop: EventLoop, limits: ConnectionLimits, budget: ConnectionBudget,
                makeHandler: @escaping (Connection) -> any ConnectionHandler) {
        loop.preconditionInEventLoop()
        self.loop = loop
        self.limits = limits
        self.budget = budget
        self.makeHandler = makeHandler
        let shortest = min(limits.idleTimeout, limits.requestTimeout)
        let period = Duration.milliseconds(Int64(max(50, min(250, shortest.milliseconds / 4))))
        // Weak, like the listeners' close callbacks below: a shard dropped without stop() (a failed start) must
        // cost its timer's ticks, not a crash on a freed object.
        let timer = LoopTimer(on: loop) { [weak self] in self?.sweep() }
        timer.start(after: period, repeat: period)
        self.timer = timer
    }

    /// Open connections of this shard.
    public var connectionCount: Int { connections.count }
    /// Ports listened on.
    public var listeningPorts: Int { listeners.count }

    // MARK: listening

    /// Listens on `address`; throws what bind or listen said (in use, privileged, not local...).
    @discardableResult
    public func listen(on address: SocketAddress, backlog: Int32 = 511) throws(UVError) -> UInt16 {
        let listener = try TCPListenSocket(address, on: loop, backlog: backlog)
        listener.delegate = self
        listeners[listener.port] = listener
        return listener.port
    }

    public func accepted(_ stream: ByteStream, on listener: TCPListenSocket) {
        guard !isDraining, !isStopping else { return stream.close() }
        let port = listener.port
        if ports[port, default: PortList()].count >= limits.maxPerPort && !evict(fromPort: port) {
            return refuse(stream, port: port, reason: "per-port connection cap reached")
        }
        if !budget.take() {
            guard evict(fromPort: nil), budget.take() else {
                return refuse(stream, port: port, reason: "connection cap reached")
            }
        }
        let now = loop.now
        let connection = Connection(shard: self, stream: stream, port: port, now: now)
        connection.handler = makeHandler(connection)
        connections[ObjectIdentifier(connection)] = connection
        link(connection)
        connection.start()
    }

    public func acceptFailed(_ error: UVError, on listener: TCPListenSocket) {
        counters.acceptErrors += 1
        delegate?.rejected(port: listener.port, client: nil, reason: "accept failed: \(error.name)")
    }

    private func refuse(_ stream: ByteStream, port: UInt16, reason: String) {
        counters.refused += 1
        delegate?.rejected(port: port, client: stream.peer, reason: reason)
        stream.close()
    }

    /// Closes the least recently active connection (of `port`, or of the shard) that is not waiting for an
    /// answer or writing one, looking at the 16 oldest; false when none of them may go.
    private func evict(fromPort port: UInt16?) -> Bool {
        var candidate = port.map { ports[$0]?.oldest } ?? oldest
        for _ in 0..<16 {
            guard let connection = candidate else { return false }
            if !connection.isBusy && !connection.stream.isWriting {
                counters.evicted += 1
                connection.close(end: port == nil ? "evicted (connection cap)" : "evicted (per-port connection cap)")
                return true
            }
            candidate = port == nil ? connection.newer : connection.portNewer
        }
        return false
    }

    // MARK: the lists

    private func link(_ c: Connection) {
        c.older = newest
        c.newer = nil
        if let newest { newest.newer = c } else { oldest = c }
        newest = c
        var list = ports[c.port, default: PortList()]
        c.portOlder = list.newest
        c.portNewer = nil
        if let last = list.newest { last.portNewer = c } else { list.oldest = c }
        list.newest = c
        list.count += 1
        ports[c.port] = list
    }

    private func unlink(_ c: Connection) {
        if let older = c.older { older.newer = c.newer } else { oldest = c.newer }
        if let newer = c.newer { newer.older = c.older } else { newest = c.older }
        c.older = nil
        c.newer = nil
        guard var list = ports[c.port] else { return }
        if let older = c.portOlder { older.portNewer = c.portNewer } else { list.oldest = c.portNewer }
        if let newer = c.portNewer { newer.portOlder = c.portOlder } else { list.newest = c.portOlder }
        c.portOlder = nil
        c.portNewer = nil
        list.count -= 1
        ports[c.port] = list.count == 0 ? nil : list
    }

    /// The connection did something: it becomes the most recently active.
    func touch(_ c: Connection) {
        c.lastActivity = loop.now
        guard c.attached, newest !== c || ports[c.port]?.newest !== c else { return }
        unlink(c)
        link(c)
    }

    func beginRequest(_ c: Connection) {
        guard !c.inRequest, c.attached else { return }
        c.inRequest = true
        c.requestStart = loop.now
        c.requestOlder = requestNewest
        c.requestNewer = nil
        if let last = requestNewest { last.requestNewer = c } else { requestOldest = c }
        requestNewest = c
    }

    func endRequest(_ c: Connection) {
        guard c.inRequest else { return }
        c.inRequest = false
        if let older = c.requestOlder { older.requestNewer = c.requestNewer } else { requestOldest = c.requestNewer }
        if let newer = c.requestNewer { newer.requestOlder = c.requestOlder } else { requestNewest = c.requestOlder }
        c.requestOlder = nil
        c.requestNewer = nil
    }

    func busyChanged(_ c: Connection, busy: Bool) {
        busyCount += busy ? 1 : -1
        if !busy { touch(c) }
        if busyCount == 0, isDraining, let drained = onDrained {
            onDrained = nil
            drained()
        }
    }

    /// The connection started closing: it no longer counts against any cap.
    func detach(_ c: Connection) {
        guard c.attached else { return }
        endRequest(c)
        unlink(c)
        c.attached = false
        budget.give()
        if c.isBusy { c.setBusy(false) }
    }

    func connectionClosed(_ c: Connection, record: ConnectionRecord) {
        connections.removeValue(forKey: ObjectIdentifier(c))
        delegate?.connectionEnded(record)
        finishStopIfDone()
    }

    // MARK: deadlines

    private func sweep() {
        let now = loop.now
        let idle = limits.idleTimeout.milliseconds
        while let c = oldest, now &- c.lastActivity >= idle {
            if c.isBusy {
                touch(c)  // waiting for our answer is not idle
                continue
            }
            if c.closeAfterWrites {
                // It had an idle period to take its last answer and did not read it: give up on it.
                c.close(end: c.end, reset: true)
                continue
            }
            counters.idleClosed += 1
            if c.inRequest { c.handler.timedOut(c, reason: "idle timeout") }
            if !c.attached { continue }
            if c.closeAfterWrites { touch(c) } else { c.close(end: "idle timeout") }
        }
        let deadline = limits.requestTimeout.milliseconds
        while let c = requestOldest, now &- c.requestStart >= deadline {
            counters.requestTimeouts += 1
            c.handler.timedOut(c, reason: "request timeout")
            if c.inRequest { endRequest(c) }
            if c.attached && !c.isBusy && !c.closeAfterWrites { c.close(end: "request timeout") }
        }
        if limits.minRate > 0 && now &- lastRateCheck >= 1000 {
            lastRateCheck = now
            checkRates(now: now)
        }
    }

    /// A connection that sent something in its last window, but less than the minimum rate allows, goes: a
    /// byte every few seconds keeps it from being idle, and here it stops keeping it open.
    private func checkRates(now: UInt64) {
        let window = max(1000, limits.rateWindow.milliseconds)
        let least = limits.minRate * Int(window / 1000)
        var slow: [Connection] = []
        var c = oldest
        while let connection = c {
            c = connection.newer
            guard now &- connection.windowStart >= window else { continue }
            if connection.windowBytes > 0 && connection.windowBytes < least && !connection.isBusy {
                slow.append(connection)
            }
            connection.windowStart = now
            connection.windowBytes = 0
        }
        for connection in slow where connection.attached {
            counters.tooSlow += 1
            connection.handler.timedOut(connection, reason: "too slow")
            if connection.attached && !connection.closeAfterWrites { connection.close(end: "too slow") }
        }
    }

    // MARK: stopping

    private func closeListeners() {
        for (_, listener) in listeners {
            listenersClosing += 1
            listener.close { [weak self] in
                guard let self else { return }
                listenersClosing -= 1
                finishStopIfDone()
            }
        }
        listeners = [:]
    }

    /// Stops accepting and lets the requests in progress be answered: idle connections close now, busy ones
    /// after their answer. `then` runs (on the loop) once no connection waits for an answer any more.
    public func drain(then: @escaping () -> Void) {
        guard !isDraining else { return }
        isDraining = true
        closeListeners()
        for connection in Array(connections.values) where connection.attached {
            if connection.isBusy || connection.inRequest { connection.handler.draining(connection) }
            else { connection.close(end: "server stopping") }
        }
        if busyCount == 0 { then() } else { onDrained = then }
    }

    /// Closes every listener and connection; `then` runs once every handle is released.
    public func stop(then: @escaping () -> Void) {
        guard !isStopping else { return }
        isStopping = true
        onStopped = then
        closeListeners()
        for connection in Array(connections.values) { connection.close(end: "listener stopped") }
        timer?.close()
        timer = nil
        finishStopIfDone()
    }

    private func finishStopIfDone() {
        guard isStopping, listenersClosing == 0, connections.isEmpty, let stopped = onStopped else { return }
        onStopped = nil
        stopped()
    }
}
