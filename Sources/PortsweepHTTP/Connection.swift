public import UVLoop

/// What a connection's protocol does with it: HTTP, echo, silent. Every call comes on the connection's loop.
public protocol ConnectionHandler: AnyObject {
    /// Bytes arrived (valid only during the call).
    func received(_ bytes: UnsafeRawBufferPointer, on connection: Connection)
    /// The request in progress missed its deadline, or the connection sent too slowly, or sat idle in the
    /// middle of a request: answer if the protocol can (HTTP: 408), then close. The server closes it after.
    func timedOut(_ connection: Connection, reason: String)
    /// The peer closed its side.
    func peerEnded(_ connection: Connection)
    /// The server is draining: finish what is in progress, then close.
    func draining(_ connection: Connection)
    /// The connection is closed (release tasks and the like).
    func closed(_ connection: Connection)
}

extension ConnectionHandler {
    public func timedOut(_ connection: Connection, reason: String) { connection.close(end: reason) }
    public func peerEnded(_ connection: Connection) { connection.finish(end: "closed by client") }
    public func draining(_ connection: Connection) { connection.finish(end: "server stopping") }
    public func closed(_ connection: Connection) {}
}

/// How a connection ended, for the log and the statistics.
/// Codable: a worker process reports its connections to the parent.
public struct ConnectionRecord: Sendable, Equatable, Codable {
    public var localPort: UInt16
    public var client: SocketAddress?
    public var bytesIn: Int
    public var bytesOut: Int
    public var requests: Int
    public var duration: Duration
    /// Why it ended: `closed by client`, `idle timeout`, `served`, `bad request (...)`, `evicted (...)`...
    public var end: String
    /// When it ended (seconds since 1970, UTC).
    public var time: Double

    public init(localPort: UInt16, client: SocketAddress?, bytesIn: Int, bytesOut: Int, requests: Int,
                duration: Duration, end: String, time: Double = WallClock.now) {
        self.localPort = localPort
        self.client = client
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.requests = requests
        self.duration = duration
        self.end = end
        self.time = time
    }
}

/// One accepted connection of a `ConnectionShard`: its stream, its counters, its place in the shard's lists
/// (least recently active first, per port, requests in progress by start), and the calls its handler makes.
/// Loop thread only.
public final class Connection: ByteStreamDelegate {
    /// Strong: a handler's task may still hold the connection after the shard's owner let it go (an answer
    /// computed past a stop); the shard lives until the last such connection goes. No cycle outlives the close
    /// callback, which takes the connection out of the shard's table.
    let shard: ConnectionShard
    public let stream: ByteStream
    /// The local port it came in on.
    public let port: UInt16
    public let peer: SocketAddress?
    public var handler: (any ConnectionHandler)!
    public private(set) var bytesIn = 0
    public private(set) var bytesOut = 0
    public var requests = 0
    let started = ContinuousClock.now

    // The shard's bookkeeping (milliseconds of the loop's clock).
    var lastActivity: UInt64
    var requestStart: UInt64 = 0
    var windowStart: UInt64
    var windowBytes = 0
    unowned(unsafe) var older: Connection?
    unowned(unsafe) var newer: Connection?
    unowned(unsafe) var portOlder: Connection?
    unowned(unsafe) var portNewer: Connection?
    unowned(unsafe) var requestOlder: Connection?
    unowned(unsafe) var requestNewer: Connection?
    var inRequest = false
    /// Counted in the shard's lists, port count and budget (false once it started closing).
    var attached = true

    private(set) var end = "closed by client"
    /// Finishing: no more reading, closing once the queued writes are out.
    private(set) var closeAfterWrites = false
    private var pausedByHandler = false
    private var pausedByBackpressure = false
    public private(set) var isClosing = false
    /// Waiting for an answer the handler computes elsewhere (a probe): not evicted, not idle, and drained.
    public private(set) var isBusy = false

    init(shard: ConnectionShard, stream: ByteStream, port: UInt16, now: UInt64) {
        self.shard = shard
        self.stream = stream
        self.port = port
        peer = stream.peer
        lastActivity = now
        windowStart = now
    }

    public var loop: EventLoop { stream.loop }
    public var limits: ConnectionLimits { shard.limits }
    public var isDraining: Bool { shard.isDraining }

    // MARK: calls from the handler

    /// Writes `bytes` (at once, or queued); pauses reading while too much is queued.
    public func send(_ bytes: UnsafeRawBufferPointer) {
        guard !isClosing, bytes.count > 0 else { return }
        switch stream.write(bytes) {
        case .success(let written):
            bytesOut += written
        case .failure(let error):
            return close(end: error.name)
        }
        if !pausedByBackpressure && stream.queuedBytes > shard.limits.maxQueuedBytes {
            pausedByBackpressure = true
            shard.counters.backpressurePauses += 1
            updateReading()
        }
    }

    public func send(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { send($0) }
    }

    /// Stops reading, and closes once what is queued is written.
    public func finish(end: String) {
        guard !isClosing else { return }
        self.end = end
        closeAfterWrites = true
        shard.endRequest(self)
        stream.stopReading()
        if !stream.isWriting { close(end: end) }
    }

    /// Closes now (queued writes are dropped).
    public func close(end: String, reset: Bool = false) {
        guard !isClosing else { return }
        self.end = end
        isClosing = true
        shard.detach(self)
        stream.close(reset: reset)
    }

    /// A request began (its first byte arrived): its deadline runs. Idempotent.
    public func beginRequest() { shard.beginRequest(self) }

    /// The request is whole: no deadline until the next one.
    public func endRequest() { shard.endRequest(self) }

    /// A request refused by a limit or as malformed, for the server's counters.
    public func countRefusedRequest() { shard.counters.refusedRequests += 1 }

    /// Stops (or resumes) reading for the handler's own reasons (an answer being computed).
    public func pauseReading(_ pause: Bool) {
        pausedByHandler = pause
        updateReading()
    }

    /// Marks the connection as waiting for an answer computed elsewhere.
    public func setBusy(_ busy: Bool) {
        guard busy != isBusy else { return }
        isBusy = busy
        shard.busyChanged(self, busy: busy)
    }

    private func updateReading() {
        guard !isClosing, !closeAfterWrites else { return }
        if pausedByHandler || pausedByBackpressure { stream.stopReading() } else { stream.startReading() }
    }

    func start() {
        stream.delegate = self
        stream.startReading()
    }

    // MARK: ByteStreamDelegate

    public func received(_ bytes: UnsafeRawBufferPointer, on stream: ByteStream) {
        guard !isClosing else { return }
        bytesIn += bytes.count
        windowBytes += bytes.count
        shard.touch(self)
        handler.received(bytes, on: self)
    }

    public func ended(_ stream: ByteStream, error: UVError?) {
        guard !isClosing else { return }
        if let error { return close(end: error.name) }
        handler.peerEnded(self)
    }

    public func wrote(_ bytes: Int, on stream: ByteStream, error: UVError?) {
        if let error {
            if error != .cancelled { close(end: error.name) }
            return
        }
        bytesOut += bytes
        if pausedByBackpressure && stream.queuedBytes <= shard.limits.maxQueuedBytes / 2 {
            pausedByBackpressure = false
            updateReading()
        }
        if closeAfterWrites && !stream.isWriting { close(end: end) }
    }

    public func closed(_ stream: ByteStream) {
        handler?.closed(self)
        let record = ConnectionRecord(localPort: port, client: peer, bytesIn: bytesIn, bytesOut: bytesOut,
                                      requests: requests, duration: ContinuousClock.now - started, end: end)
        handler = nil
        shard.connectionClosed(self, record: record)
    }
}
