public import HTTPTypes
public import UVLoop

/// A request as a handler sees it: the head as swift-http-types values, the body (at most the connection's
/// `maxBodyBytes`), and the peer.
public struct ServerRequest: Sendable {
    public var head: HTTPRequest
    public var body: [UInt8]
    public var peer: SocketAddress?

    public init(head: HTTPRequest, body: [UInt8] = [], peer: SocketAddress?) {
        self.head = head
        self.body = body
        self.peer = peer
    }
}

/// A response: the head and the body, whole or streamed.
public struct ServerResponse: Sendable {
    public var head: HTTPResponse
    public var body: [UInt8]
    /// A body sent as it is produced, in chunked transfer coding (`body` is then unused): JSON Lines of
    /// results as they come, Server-Sent Events. The server stops iterating when the client goes or the
    /// server stops (the stream's `onTermination` tells the producer), and cuts a reader that falls more than
    /// `ConnectionLimits.maxQueuedBytes` behind: memory per client stays bounded.
    public var stream: AsyncStream<[UInt8]>?

    public init(status: HTTPResponse.Status, headers: HTTPFields = [:], body: [UInt8]) {
        head = HTTPResponse(status: status, headerFields: headers)
        self.body = body
    }

    /// A streamed response: each element of `chunks` goes out as one chunk as soon as it is produced.
    public static func streaming(status: HTTPResponse.Status = .ok, headers: HTTPFields = [:],
                                 _ chunks: AsyncStream<[UInt8]>) -> ServerResponse {
        var response = ServerResponse(status: status, headers: headers, body: [])
        response.stream = chunks
        return response
    }

    /// JSON Lines as they come (`application/x-ndjson`): each element is one line (the newline is added).
    public static func jsonLines(_ lines: AsyncStream<[UInt8]>) -> ServerResponse {
        streaming(headers: [.contentType: "application/x-ndjson", .cacheControl: "no-store"],
                  AsyncStream { continuation in
                      let task = Task {
                          for await line in lines { continuation.yield(line + [UInt8(ascii: "\n")]) }
                          continuation.finish()
                      }
                      continuation.onTermination = { _ in task.cancel() }
                  })
    }

    /// Server-Sent Events (`text/event-stream`), each element framed as one event.
    public static func serverSentEvents(_ events: AsyncStream<ServerSentEvent>) -> ServerResponse {
        streaming(headers: [.contentType: "text/event-stream", .cacheControl: "no-store"],
                  AsyncStream { continuation in
                      let task = Task {
                          for await event in events { continuation.yield(event.bytes) }
                          continuation.finish()
                      }
                      continuation.onTermination = { _ in task.cancel() }
                  })
    }
}

/// One Server-Sent Event: an optional event name and id, and data (one `data:` line per line of it).
public struct ServerSentEvent: Sendable, Equatable {
    public var event: String?
    public var id: String?
    public var data: String

    public init(event: String? = nil, id: String? = nil, data: String) {
        self.event = event
        self.id = id
        self.data = data
    }

    /// The event on the wire. Names and ids lose line breaks (they would start a field of their own).
    public var bytes: [UInt8] {
        func line(_ text: String) -> String { text.filter { $0 != "\n" && $0 != "\r" } }
        var text = ""
        if let event { text += "event: \(line(event))\n" }
        if let id { text += "id: \(line(id))\n" }
        for part in data.split(separator: "\n", omittingEmptySubsequences: false) {
            text += "data: \(part.filter { $0 != "\r" })\n"
        }
        return Array((text + "\n").utf8)
    }
}

/// HTTP/1.1 responses as bytes on the wire.
public enum HTTPResponseWriter {
    /// The status line, the fields (Content-Length and Connection are the writer's), the blank line and the
    /// body. `headOnly` (a HEAD request): the length a GET would have, no body.
    public static func bytes(_ response: ServerResponse, keepAlive: Bool, headOnly: Bool = false) -> [UInt8] {
        var text = "HTTP/1.1 \(response.head.status.code) \(response.head.status.reasonPhrase)\r\n"
        for field in response.head.headerFields where field.name != .contentLength && field.name != .connection {
            text += "\(field.name.rawName): \(field.value)\r\n"
        }
        text += "Content-Length: \(response.body.count)\r\n"
        text += keepAlive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n"
        return Array(text.utf8) + (headOnly ? [] : response.body)
    }

    /// The head of a streamed response: `Transfer-Encoding: chunked`, no Content-Length. Not `chunked`: for an
    /// HTTP/1.0 client, which knows no chunks: the body is the bytes as they come, ended by closing the
    /// connection (`keepAlive` must then be false).
    public static func streamHead(_ response: ServerResponse, keepAlive: Bool, chunked: Bool = true) -> [UInt8] {
        var text = "HTTP/1.1 \(response.head.status.code) \(response.head.status.reasonPhrase)\r\n"
        for field in response.head.headerFields
        where field.name != .contentLength && field.name != .connection && field.name != .transferEncoding {
            text += "\(field.name.rawName): \(field.value)\r\n"
        }
        if chunked { text += "Transfer-Encoding: chunked\r\n" }
        text += keepAlive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n"
        return Array(text.utf8)
    }

    /// One chunk of a chunked body (never empty: an empty chunk ends the body).
    public static func chunk(_ bytes: [UInt8]) -> [UInt8] {
        Array((String(bytes.count, radix: 16) + "\r\n").utf8) + bytes + [13, 10]
    }

    /// The end of a chunked body.
    public static let lastChunk: [UInt8] = Array("0\r\n\r\n".utf8)

    /// A plain-text answer (listen's 200, an error page).
    public static func text(_ status: HTTPResponse.Status, _ body: String, keepAlive: Bool, headOnly: Bool = false) -> [UInt8] {
        bytes(ServerResponse(status: status, headers: [.contentType: "text/plain"], body: Array(body.utf8)),
              keepAlive: keepAlive, headOnly: headOnly)
    }

    /// The status that answers a framing error.
    public static func status(for error: HTTPFramingError) -> HTTPResponse.Status {
        switch error.status {
        case 413: return .contentTooLarge
        case 431: return .requestHeaderFieldsTooLarge
        case 505: return .httpVersionNotSupported
        default: return .badRequest
        }
    }
}
