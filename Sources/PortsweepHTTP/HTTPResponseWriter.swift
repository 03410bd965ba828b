public import HTTPTypes
public import UVLoop

/// A request as a handler sees it: the head as swift-http-types values, and the peer.
public struct ServerRequest: Sendable {
    public var head: HTTPRequest
    public var peer: SocketAddress?

    public init(head: HTTPRequest, peer: SocketAddress?) {
        self.head = head
        self.peer = peer
    }
}

/// A response: the head and the body.
public struct ServerResponse: Sendable {
    public var head: HTTPResponse
    public var body: [UInt8]

    public init(status: HTTPResponse.Status, headers: HTTPFields = [:], body: [UInt8]) {
        head = HTTPResponse(status: status, headerFields: headers)
        self.body = body
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
