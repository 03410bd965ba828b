import HTTPTypes
import UVLoop

/// Answers requests at once, on the loop (listen's reply): no task, no await. It may keep what it builds per
/// connection (the answer for a keep-alive connection is the same every time).
public protocol HTTPImmediateResponder: AnyObject {
    /// The whole response to `head` on `connection`, with `Connection: keep-alive` or `close`.
    func response(to head: HTTPRequestHead, keepAlive: Bool, on connection: Connection) -> [UInt8]
}

/// HTTP/1.1 on one connection of a `ConnectionShard`: requests framed by http-parser, answered in order
/// (pipelined requests read together are answered with one write), keep-alive, and the limits: a request
/// target over `maxTargetLength` is 414 as soon as the request line runs past it, a head over `maxHeadBytes`
/// 431, a body over `maxBodyBytes` 413, another HTTP version 505, garbage 400, a request not whole within the
/// request deadline 408. Every refusal closes the connection after the answer.
public final class HTTPConnectionHandler: ConnectionHandler {
    public typealias Handler = @Sendable (ServerRequest) async -> ServerResponse

    public enum Responder {
        case immediate(any HTTPImmediateResponder)
        /// Answered by an async handler (a task on the connection's loop per request; reading pauses meanwhile,
        /// so answers keep the order of the requests).
        case deferred(Handler)
    }

    private let responder: Responder
    private let framer: HTTPRequestFramer
    private var headBytes = 0
    private var requestLineEnded = false
    /// Deferred: requests read but not answered yet, and the task answering the first.
    private var waiting: [HTTPRequestHead] = []
    private var answering: Task<Void, Never>?
    /// The answer in progress is a stream, and how its end is told (a drain ends it: an event stream may never
    /// end by itself); nil when none is.
    private var streaming: StreamEnd?

    enum StreamEnd {
        /// HTTP/1.1: chunks, then the last chunk.
        case lastChunk
        /// HTTP/1.0 knows no chunks: the bytes as they come, ended by the close.
        case close
    }

    public init(_ responder: Responder, limits: ConnectionLimits) {
        self.responder = responder
        if case .deferred = responder {
            framer = HTTPRequestFramer(collectHeaders: true, maxBodyBytes: limits.maxBodyBytes)
        } else {
            framer = HTTPRequestFramer(collectHeaders: false, maxBodyBytes: limits.maxBodyBytes)
        }
    }

    public func received(_ bytes: UnsafeRawBufferPointer, on connection: Connection) {
        let heads: [HTTPRequestHead]
        do {
            heads = try framer.feed(bytes)
        } catch {
            return refuse(connection, HTTPResponseWriter.status(for: error),
                          error.status == 400 ? "bad request: \(error.name)" : error.reason,
                          end: error.status == 400 ? "bad request (\(error.name))" : error.reason)
        }
        if heads.isEmpty {
            guard framer.inRequest else { return }
            connection.beginRequest()
            guard !framer.headDone else { return }
            // Until the request line ends, every byte is method and target: too many is a 414 at once.
            headBytes += bytes.count
            if !requestLineEnded { requestLineEnded = bytes.contains(UInt8(ascii: "\n")) }
            if !requestLineEnded && headBytes > connection.limits.maxTargetLength + HTTPConnectionHandler.requestLineOverhead {
                return refuse(connection, .uriTooLong, "request target too long", end: "request target too long")
            }
            if headBytes > connection.limits.maxHeadBytes {
                return refuse(connection, .requestHeaderFieldsTooLarge, "request header fields too large",
                              end: "request head too large")
            }
            return
        }
        headBytes = 0
        requestLineEnded = false
        if heads.contains(where: { $0.target.utf8.count > connection.limits.maxTargetLength }) {
            return refuse(connection, .uriTooLong, "request target too long", end: "request target too long")
        }
        if framer.inRequest { connection.beginRequest() } else { connection.endRequest() }
        switch responder {
        case .immediate(let immediate): answer(heads, with: immediate, on: connection)
        case .deferred(let handler):
            waiting += heads
            if answering == nil { answerNext(with: handler, on: connection) }
            if streaming != nil && waiting.count >= HTTPConnectionHandler.maxWaitingWhileStreaming { connection.pauseReading(true) }
        }
    }

    /// Requests read ahead while a stream is being sent, before reading pauses.
    static let maxWaitingWhileStreaming = 8

    /// Method, spaces and version around the target: `OPTIONS ` + ` HTTP/1.1\r\n`.
    static let requestLineOverhead = 32

    private func refuse(_ connection: Connection, _ status: HTTPResponse.Status, _ message: String, end: String) {
        if status != .requestTimeout { connection.countRefusedRequest() }
        connection.send(HTTPResponseWriter.text(status, message + "\n", keepAlive: false))
        connection.finish(end: end)
    }

    public func timedOut(_ connection: Connection, reason: String) {
        // Only a request caught half-way is answered; an idle keep-alive connection just closes.
        guard framer.inRequest, answering == nil else { return connection.close(end: reason) }
        refuse(connection, .requestTimeout, "request timed out", end: reason)
    }

    public func draining(_ connection: Connection) {
        // The answer in progress goes out with `Connection: close`; a request half-read is not waited for; a
        // stream ends here, whole (its last chunk sent).
        if let end = streaming {
            answering?.cancel()
            answering = nil
            streaming = nil
            if end == .lastChunk { connection.send(HTTPResponseWriter.lastChunk) }
            return connection.finish(end: "server stopping")
        }
        if answering == nil { connection.finish(end: "server stopping") }
    }

    public func closed(_ connection: Connection) {
        answering?.cancel()
        answering = nil
        streaming = nil
        waiting = []
    }

    // MARK: immediate answers

    private func answer(_ heads: [HTTPRequestHead], with responder: any HTTPImmediateResponder, on connection: Connection) {
        var batch: [UInt8] = []
        for head in heads {
            connection.requests += 1
            let keepAlive = head.keepAlive && !framer.isUpgraded && !connection.isDraining
            let response = responder.response(to: head, keepAlive: keepAlive, on: connection)
            if heads.count == 1 {
                connection.send(response)
            } else {
                if batch.isEmpty { batch.reserveCapacity(response.count * heads.count) }
                batch += response
            }
            if !keepAlive {
                if !batch.isEmpty { connection.send(batch) }
                return connection.finish(end: framer.isUpgraded ? "upgrade refused" : "served")
            }
        }
        if !batch.isEmpty { connection.send(batch) }
        if framer.isUpgraded { connection.finish(end: "upgrade refused") }
    }

    // MARK: deferred answers

    private func answerNext(with handler: @escaping Handler, on connection: Connection) {
        guard !connection.isClosing, !waiting.isEmpty else { return }
        let head = waiting.removeFirst()
        connection.requests += 1
        connection.pauseReading(true)
        connection.setBusy(true)
        let request = HTTPConnectionHandler.request(head, peer: connection.peer)
        let box = LoopBox((self, connection), loop: connection.loop)
        answering = Task(executorPreference: connection.loop) {
            let response = await handler(request)
            let (me, connection) = box.value
            me.answered(head, response, with: handler, on: connection)
        }
    }

    private func answered(_ head: HTTPRequestHead, _ response: ServerResponse, with handler: @escaping Handler,
                          on connection: Connection) {
        answering = nil
        guard !connection.isClosing else { return }
        // HTTP/1.0 knows no chunks: its stream is ended by the close.
        let chunked = head.versionMajor > 1 || head.versionMinor >= 1
        let keepAlive = head.keepAlive && !framer.isUpgraded && !connection.isDraining
            && (response.stream == nil || chunked)
        if let stream = response.stream, !head.isHead {
            return sendStream(stream, response, keepAlive: keepAlive, chunked: chunked, with: handler, on: connection)
        }
        if response.stream != nil {
            connection.send(HTTPResponseWriter.streamHead(response, keepAlive: keepAlive, chunked: chunked))
        } else {
            connection.send(HTTPResponseWriter.bytes(response, keepAlive: keepAlive, headOnly: head.isHead))
        }
        next(keepAlive: keepAlive, with: handler, on: connection)
    }

    /// After an answer: close, read on, or answer the next request already read.
    private func next(keepAlive: Bool, with handler: @escaping Handler, on connection: Connection) {
        connection.setBusy(false)
        if !keepAlive { return connection.finish(end: "served") }
        if waiting.isEmpty {
            connection.pauseReading(false)
        } else {
            answerNext(with: handler, on: connection)
        }
    }

    /// Sends a streamed body chunk by chunk as the handler's stream yields, then goes on as after any answer.
    /// The connection stays busy (no idle deadline) while the stream runs.
    private func sendStream(_ chunks: AsyncStream<[UInt8]>, _ response: ServerResponse, keepAlive: Bool,
                            chunked: Bool, with handler: @escaping Handler, on connection: Connection) {
        connection.send(HTTPResponseWriter.streamHead(response, keepAlive: keepAlive, chunked: chunked))
        streaming = chunked ? .lastChunk : .close
        // Reading goes on while a stream runs: a client that leaves is seen at once (an event stream may send
        // nothing for minutes), and what it pipelines meanwhile waits its turn, a few requests at most.
        connection.pauseReading(waiting.count >= HTTPConnectionHandler.maxWaitingWhileStreaming)
        let box = LoopBox((self, connection), loop: connection.loop)
        answering = Task(executorPreference: connection.loop) {
            for await chunk in chunks {
                let (_, connection) = box.value
                guard !connection.isClosing, !Task.isCancelled else { return }
                // A reader that falls this far behind is cut: what it does not read is never queued without end.
                if connection.stream.queuedBytes > connection.limits.maxQueuedBytes {
                    return connection.close(end: "stream reader too slow")
                }
                if !chunk.isEmpty { connection.send(chunked ? HTTPResponseWriter.chunk(chunk) : chunk) }
            }
            guard !Task.isCancelled else { return }
            let (me, connection) = box.value
            guard !connection.isClosing else { return }
            me.answering = nil
            me.streaming = nil
            if chunked { connection.send(HTTPResponseWriter.lastChunk) }
            me.next(keepAlive: keepAlive, with: handler, on: connection)
        }
    }

    /// The swift-http-types form of a framed head.
    static func request(_ head: HTTPRequestHead, peer: SocketAddress?) -> ServerRequest {
        var fields = HTTPFields()
        for (name, value) in head.headers {
            if let fieldName = HTTPField.Name(name) { fields.append(HTTPField(name: fieldName, value: value)) }
        }
        let request = HTTPRequest(method: HTTPRequest.Method(head.method) ?? .get, scheme: nil,
                                  authority: head.headers.first { $0.name.lowercased() == "host" }?.value,
                                  path: head.target, headerFields: fields)
        return ServerRequest(head: request, body: head.body, peer: peer)
    }
}

/// Silent: read and drop (listen's echo, which also answers the roster question, lives with listen).
public final class SilentHandler: ConnectionHandler {
    public init() {}
    public func received(_ bytes: UnsafeRawBufferPointer, on connection: Connection) {}
}
