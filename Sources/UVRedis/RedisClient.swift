internal import CHiredisUV
public import UVLoop

#if canImport(Glibc)
import Glibc
#endif

/// A reply, as hiredis parsed it. A top-level error reply is thrown (`RedisError.reply`); inside an array it is
/// an element.
public enum RedisReply: Sendable, Equatable {
    case string(String)
    case status(String)
    case integer(Int64)
    case array([RedisReply])
    case null
    case error(String)
}

public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Not connected now (refused, unreachable, AUTH refused, still connecting): the command was not sent.
    case unavailable(String)
    /// No reply within the command's deadline; the connection is dropped (a reply after it could not be
    /// matched to anything) and made again.
    case timedOut
    /// The connection went while the command waited.
    case connectionLost
    /// Redis answered with an error (-ERR ..., -NOSCRIPT ...).
    case reply(String)

    public var description: String {
        switch self {
        case .unavailable(let why): "not connected (\(why))"
        case .timedOut: "no reply in time"
        case .connectionLost: "connection lost"
        case .reply(let text): text
        }
    }
}

/// One connection to one Redis server through hiredis's async API, driven by hiredis's libuv adapter on `loop`
/// (a `uv_poll_t` on the socket, closed with `uv_close` and freed in its close callback when the context goes).
///
/// hiredis 0.14 has no timeouts of its own, so every command and the connect have a deadline of ours, checked by
/// one repeating timer. A command not answered by its deadline fails, and the connection is dropped and made
/// again after `reconnectDelay`: the same happens when the server closes it or the connect fails. Commands made
/// while not connected fail at once (`unavailable`): a caller with a fallback is not held up by a dead server.
///
/// Every mutable field is confined to the loop's thread: the public methods hop there, hiredis's callbacks run
/// there (they come from the adapter's poll callback or from calls made there).
public final class RedisClient: @unchecked Sendable {
    public struct Options: Sendable {
        /// An address (a name is resolved before: hiredis would resolve it with a blocking getaddrinfo).
        public var host: IPAddress
        public var port: Int
        /// AUTH's password, sent first on every connection.
        public var password: String?
        public var commandTimeout: Duration = .milliseconds(250)
        public var connectTimeout: Duration = .seconds(1)
        public var reconnectDelay: Duration = .milliseconds(500)

        public init(host: IPAddress, port: Int, password: String? = nil) {
            self.host = host
            self.port = port
            self.password = password
        }
    }

    private enum State {
        /// Not connected; a connect is due after the reconnect delay.
        case idle(reason: String)
        /// Connecting, or connected and waiting for AUTH's answer.
        case connecting(UnsafeMutablePointer<redisAsyncContext>, deadline: UInt64)
        case ready(UnsafeMutablePointer<redisAsyncContext>)
        case closed
    }

    public let loop: EventLoop
    public let options: Options
    /// Told (on the loop) each time the client becomes ready (true) or stops being ready (false, with why).
    private let onAvailability: @Sendable (Bool, String) -> Void

    // Loop thread only.
    private var state: State = .idle(reason: "not connected yet")
    /// Why the last connection ended or failed: what a command made while connecting again is told.
    private var lastFailure: String?
    private var pending: [Int: CheckedContinuation<RedisReply, any Error>] = [:]
    /// Deadlines in the order commands were sent (all have the same timeout): the head is the soonest.
    private var deadlines: [(id: Int, at: UInt64)] = []
    private var head = 0
    private var nextID = 1
    private var authID = 0
    private var ticker: LoopTimer?
    private var reconnect: LoopTimer?

    public init(_ options: Options, on loop: EventLoop,
                onAvailability: @escaping @Sendable (Bool, String) -> Void = { _, _ in }) {
        self.options = options
        self.loop = loop
        self.onAvailability = onAvailability
    }

    /// Starts connecting (and keeps the connection up until `close()`).
    public func start() {
        loop.execute { [self] in
            guard ticker == nil, case .idle = state else { return }
            let ticker = LoopTimer(on: loop) { [weak self] in self?.tick() }
            ticker.start(after: .milliseconds(10), repeat: .milliseconds(10))
            self.ticker = ticker
            reconnect = LoopTimer(on: loop) { [weak self] in self?.connect() }
            connect()
        }
    }

    /// Sends a command (its words, binary-safe) and waits for the reply, at most `commandTimeout`.
    public func command(_ words: [String]) async throws -> RedisReply {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<RedisReply, any Error>) in
            loop.execute { [self] in send(words, done) }
        }
    }

    /// Whether commands are being sent now (read on the loop).
    public var isReady: Bool {
        get async { await loop.run { [self] in if case .ready = state { true } else { false } } }
    }

    /// Drops the connection (waiting commands fail with `connectionLost`) and closes the timers; returns once
    /// libuv has closed every handle of the client.
    public func close() async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            loop.execute { [self] in
                let wasReady = if case .ready = state { true } else { false }
                let context = self.context
                state = .closed
                if let context { free(context) }
                if wasReady { onAvailability(false, "closed") }
                reconnect?.close()
                reconnect = nil
                guard let ticker else { return done.resume() }
                self.ticker = nil
                ticker.close { done.resume() }
            }
        }
    }

    // MARK: Loop thread

    private var context: UnsafeMutablePointer<redisAsyncContext>? {
        switch state {
        case .connecting(let context, _), .ready(let context): context
        case .idle, .closed: nil
        }
    }

    private func connect() {
        guard case .idle = state else { return }
        guard let context = redisAsyncConnect("\(options.host)", Int32(options.port)) else {
            return becomeIdle("out of memory")
        }
        if context.pointee.err != 0 {
            let reason = Self.errorText(context)
            redisAsyncFree(context)
            return becomeIdle(reason)
        }
        // The context holds the client until it is freed (released in `contextGone`).
        context.pointee.data = Unmanaged.passRetained(self).toOpaque()
        guard portsweep_redis_attach(context, loop.rawLoop) == REDIS_OK else {
            Unmanaged<RedisClient>.fromOpaque(context.pointee.data).release()
            context.pointee.data = nil
            redisAsyncFree(context)
            return becomeIdle("cannot watch the socket on the loop")
        }
        redisAsyncSetConnectCallback(context) { context, status in
            RedisClient.of(context)?.connected(UnsafeMutablePointer(mutating: context!), ok: status == REDIS_OK)
        }
        redisAsyncSetDisconnectCallback(context) { context, status in
            RedisClient.of(context)?.disconnected(UnsafeMutablePointer(mutating: context!))
        }
        state = .connecting(context, deadline: loop.now + options.connectTimeout.milliseconds)
    }

    private static func of(_ context: UnsafePointer<redisAsyncContext>?) -> RedisClient? {
        guard let data = context?.pointee.data else { return nil }
        return Unmanaged<RedisClient>.fromOpaque(data).takeUnretainedValue()
    }

    private static func errorText(_ context: UnsafePointer<redisAsyncContext>) -> String {
        let text = withUnsafeBytes(of: context.pointee.c.errstr) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        return text.isEmpty ? "error \(context.pointee.err)" : text
    }

    /// hiredis frees a context whose connect failed once this returns.
    private func connected(_ context: UnsafeMutablePointer<redisAsyncContext>, ok: Bool) {
        guard case .connecting(let current, let deadline) = state, current == context else { return }
        guard ok else {
            let reason = Self.errorText(context)
            contextGone(context)
            return becomeIdle(reason)
        }
        if let password = options.password {
            authID = issue(["AUTH", password], on: context)
            state = .connecting(context, deadline: deadline)
        } else {
            becomeReady(context)
        }
    }

    /// The server closed the connection (or hiredis gave up on it); hiredis frees the context once this returns.
    private func disconnected(_ context: UnsafeMutablePointer<redisAsyncContext>) {
        guard let current = self.context, current == context else { return }
        let reason = context.pointee.err != 0 ? Self.errorText(context) : "closed by the server"
        contextGone(context)
        becomeIdle(reason)
    }

    private func becomeReady(_ context: UnsafeMutablePointer<redisAsyncContext>) {
        state = .ready(context)
        onAvailability(true, "connected to \(options.host):\(options.port)")
    }

    private func becomeIdle(_ reason: String) {
        let wasReady = if case .ready = state { true } else { false }
        state = .idle(reason: reason)
        lastFailure = reason
        if wasReady { onAvailability(false, reason) }
        reconnect?.start(after: options.reconnectDelay)
    }

    /// Our own end of a connection (a deadline passed): waiting commands fail, hiredis closes its poll handle.
    private func drop(_ reason: String) {
        guard let context else { return }
        becomeIdle(reason)
        free(context)
    }

    /// `redisAsyncFree`: pending callbacks run with no reply, then the disconnect callback (ignored: the state no
    /// longer names this context).
    private func free(_ context: UnsafeMutablePointer<redisAsyncContext>) {
        redisAsyncFree(context)
        contextGone(context)
    }

    private func contextGone(_ context: UnsafeMutablePointer<redisAsyncContext>) {
        guard let data = context.pointee.data else { return }
        context.pointee.data = nil
        Unmanaged<RedisClient>.fromOpaque(data).release()
    }

    private func send(_ words: [String], _ done: CheckedContinuation<RedisReply, any Error>) {
        guard case .ready(let context) = state else {
            let why = switch state {
            case .idle(let reason): reason
            case .connecting: lastFailure ?? "connecting"
            case .closed: "closed"
            case .ready: ""
            }
            return done.resume(throwing: RedisError.unavailable(why))
        }
        let id = issue(words, on: context)
        guard id != 0 else { return done.resume(throwing: RedisError.connectionLost) }
        pending[id] = done
    }

    /// Queues a command on the context; its id (0 if hiredis refused it). The deadline starts now.
    private func issue(_ words: [String], on context: UnsafeMutablePointer<redisAsyncContext>) -> Int {
        let id = nextID
        nextID += 1
        let copies = words.map { word in word.utf8CString.withUnsafeBufferPointer { buffer in
            let copy = UnsafeMutablePointer<CChar>.allocate(capacity: buffer.count)
            copy.initialize(from: buffer.baseAddress!, count: buffer.count)
            return (copy, buffer.count - 1)
        } }
        defer { for (copy, _) in copies { copy.deallocate() } }
        var argv = copies.map { UnsafePointer<CChar>?(UnsafePointer($0.0)) }
        var lengths = copies.map(\.1)
        // hiredis formats the command into its own buffer before returning: the copies can go after.
        let rc = redisAsyncCommandArgv(context, { context, reply, id in
            RedisClient.of(context)?.replied(Int(bitPattern: id), reply?.assumingMemoryBound(to: redisReply.self))
        }, UnsafeMutableRawPointer(bitPattern: id), Int32(words.count), &argv, &lengths)
        guard rc == REDIS_OK else { return 0 }
        deadlines.append((id, loop.now + options.commandTimeout.milliseconds))
        return id
    }

    private func replied(_ id: Int, _ reply: UnsafeMutablePointer<redisReply>?) {
        if id == authID {
            authID = 0
            guard let reply, case .connecting(let context, _) = state else { return }
            if case .success = Self.value(reply) { return becomeReady(context) }
            let reason = if case .failure(let error) = Self.value(reply) { "AUTH refused: \(error)" } else { "AUTH refused" }
            return drop(reason)
        }
        guard let done = pending.removeValue(forKey: id) else { return }
        guard let reply else { return done.resume(throwing: RedisError.connectionLost) }
        done.resume(with: Self.value(reply).mapError { $0 as any Error })
    }

    static func value(_ reply: UnsafeMutablePointer<redisReply>) -> Result<RedisReply, RedisError> {
        let text = { String(decoding: UnsafeRawBufferPointer(start: reply.pointee.str, count: Int(reply.pointee.len)), as: UTF8.self) }
        switch reply.pointee.type {
        case REDIS_REPLY_STRING: return .success(.string(text()))
        case REDIS_REPLY_STATUS: return .success(.status(text()))
        case REDIS_REPLY_INTEGER: return .success(.integer(Int64(reply.pointee.integer)))
        case REDIS_REPLY_NIL: return .success(.null)
        case REDIS_REPLY_ERROR: return .failure(.reply(text()))
        case REDIS_REPLY_ARRAY:
            let elements = (0..<Int(reply.pointee.elements)).map { index -> RedisReply in
                switch value(reply.pointee.element[index]!) {
                case .success(let element): element
                case .failure(let error): .error(error.description)
                }
            }
            return .success(.array(elements))
        default: return .failure(.reply("reply of unknown type \(reply.pointee.type)"))
        }
    }

    /// The deadlines: the connect's, and the oldest waiting command's (commands are answered in order, so the
    /// first past its deadline means the connection is stuck).
    private func tick() {
        let now = loop.now
        if case .connecting(_, let deadline) = state, now >= deadline {
            drop(authID != 0 ? "no answer to AUTH in time" : "no connection within \(options.connectTimeout)")
        }
        while head < deadlines.count, deadlines[head].at <= now {
            let id = deadlines[head].id
            head += 1
            if let done = pending.removeValue(forKey: id) {
                done.resume(throwing: RedisError.timedOut)
                drop("no reply within \(options.commandTimeout)")
            }
        }
        // Answered commands leave their deadlines behind: skip them, and compact now and then.
        while head < deadlines.count, pending[deadlines[head].id] == nil, deadlines[head].id != authID { head += 1 }
        if head > 1024 || head == deadlines.count {
            deadlines.removeFirst(head)
            head = 0
        }
    }
}
