import CHTTPParser

/// The head of one HTTP/1.x request, as far as a reply needs it.
public struct HTTPRequestHead: Sendable, Equatable {
    public var method: String
    public var target: String
    public var versionMajor: Int
    public var versionMinor: Int
    /// Whether the connection stays open after the response (HTTP/1.1 default, `Connection:` header).
    public var keepAlive: Bool
    /// Header fields in order, when the framer collects them.
    public var headers: [(name: String, value: String)]
    /// The body, when the framer collects headers (a deferred handler's request); at most the framer's limit.
    public var body: [UInt8] = []

    public var isHead: Bool { method == "HEAD" }

    public static func == (a: HTTPRequestHead, b: HTTPRequestHead) -> Bool {
        a.method == b.method && a.target == b.target && a.versionMajor == b.versionMajor
            && a.versionMinor == b.versionMinor && a.keepAlive == b.keepAlive
            && a.headers.map(\.name) == b.headers.map(\.name) && a.headers.map(\.value) == b.headers.map(\.value)
            && a.body == b.body
    }
}

/// A request the framer refused: the parser's error name (`HPE_INVALID_METHOD`...) and description.
public struct HTTPFramingError: Error, Sendable, Equatable, CustomStringConvertible {
    public let name: String
    public let reason: String
    public var description: String { "\(name): \(reason)" }

    /// A body longer than the framer's limit (declared or sent).
    public static let bodyTooLarge = HTTPFramingError(name: "BODY_TOO_LARGE", reason: "request body too large")
    /// A version other than HTTP/1.0 and HTTP/1.1.
    public static let versionNotSupported = HTTPFramingError(name: "VERSION_NOT_SUPPORTED",
                                                             reason: "only HTTP/1.0 and HTTP/1.1 are served")

    /// The status that answers it: 413 for a body over the limit, 431 for a head over the parser's limit, 505 for
    /// another HTTP version, 400 for the rest.
    public var status: Int {
        switch name {
        case HTTPFramingError.bodyTooLarge.name: return 413
        case HTTPFramingError.versionNotSupported.name: return 505
        case "HPE_HEADER_OVERFLOW": return 431
        default: return 400
        }
    }
}

/// Frames HTTP/1.x requests out of a byte stream with Debian's http-parser (2.9.4, request-smuggling fixes):
/// pipelined requests, bodies (Content-Length or chunked; kept when headers are, dropped otherwise), keep-alive. One framer per
/// connection, used from one thread.
public final class HTTPRequestFramer {
    private var parser = http_parser()
    private var settings = http_parser_settings()
    private let collectHeaders: Bool
    private var url: [UInt8] = []
    private var field: [UInt8] = []
    private var value: [UInt8] = []
    private var headers: [(name: String, value: String)] = []
    private var completed: [HTTPRequestHead] = []
    private var current: HTTPRequestHead?
    private var upgraded = false
    private let maxBodyBytes: UInt64
    private var bodyBytes: UInt64 = 0
    private var refusal: HTTPFramingError?
    /// Inside a request: between its first byte and its end; `headDone` once its head is whole.
    public private(set) var inRequest = false
    public private(set) var headDone = false

    /// `collectHeaders`: keep header fields (costs allocations; a plain reply needs none). `maxBodyBytes`: a
    /// request whose body is (or says it is) longer is refused with `HTTPFramingError.bodyTooLarge`.
    public init(collectHeaders: Bool = false, maxBodyBytes: Int = Int.max) {
        self.collectHeaders = collectHeaders
        self.maxBodyBytes = UInt64(max(0, maxBodyBytes))
        http_parser_init(&parser, HTTP_REQUEST)
        http_parser_settings_init(&settings)
        settings.on_message_begin = { parser in
            let framer = HTTPRequestFramer.from(parser)
            framer.inRequest = true
            framer.headDone = false
            framer.bodyBytes = 0
            return 0
        }
        settings.on_body = { parser, at, length in
            let framer = HTTPRequestFramer.from(parser)
            framer.bodyBytes += UInt64(length)
            if framer.bodyBytes > framer.maxBodyBytes { framer.refuse(.bodyTooLarge, parser); return 0 }
            if framer.collectHeaders, let at {
                framer.current?.body.append(contentsOf: UnsafeRawBufferPointer(start: at, count: length))
            }
            return 0
        }
        settings.on_url = { parser, at, length in
            HTTPRequestFramer.from(parser).url.append(contentsOf: UnsafeRawBufferPointer(start: at, count: length))
            return 0
        }
        settings.on_header_field = { parser, at, length in
            let framer = HTTPRequestFramer.from(parser)
            guard framer.collectHeaders else { return 0 }
            if !framer.value.isEmpty { framer.flushHeader() }
            framer.field.append(contentsOf: UnsafeRawBufferPointer(start: at, count: length))
            return 0
        }
        settings.on_header_value = { parser, at, length in
            let framer = HTTPRequestFramer.from(parser)
            guard framer.collectHeaders else { return 0 }
            framer.value.append(contentsOf: UnsafeRawBufferPointer(start: at, count: length))
            return 0
        }
        settings.on_headers_complete = { parser in
            let framer = HTTPRequestFramer.from(parser!)
            framer.headersComplete(parser!)
            return 0
        }
        settings.on_message_complete = { parser in
            let framer = HTTPRequestFramer.from(parser!)
            if let head = framer.current { framer.completed.append(head) }
            framer.current = nil
            framer.inRequest = false
            framer.headDone = false
            return 0
        }
    }

    /// Stops the parser where it is; `feed` then throws `error`.
    private func refuse(_ error: HTTPFramingError, _ parser: UnsafeMutablePointer<http_parser>?) {
        guard refusal == nil else { return }
        refusal = error
        http_parser_pause(parser, 1)
    }

    private static func from(_ parser: UnsafeMutablePointer<http_parser>?) -> HTTPRequestFramer {
        Unmanaged<HTTPRequestFramer>.fromOpaque(parser!.pointee.data).takeUnretainedValue()
    }

    private func flushHeader() {
        headers.append((String(decoding: field, as: UTF8.self), String(decoding: value, as: UTF8.self)))
        field.removeAll(keepingCapacity: true)
        value.removeAll(keepingCapacity: true)
    }

    private func headersComplete(_ parser: UnsafeMutablePointer<http_parser>) {
        headDone = true
        if collectHeaders && !field.isEmpty { flushHeader() }
        let version = (parser.pointee.http_major, parser.pointee.http_minor)
        if version != (1, 0) && version != (1, 1) { refuse(.versionNotSupported, parser) }
        // A declared length over the limit is refused before any of the body is read.
        if parser.pointee.content_length != UInt64.max, parser.pointee.content_length > maxBodyBytes {
            refuse(.bodyTooLarge, parser)
        }
        let method = String(cString: http_method_str(http_method(rawValue: portsweep_http_method(parser))))
        current = HTTPRequestHead(
            method: method, target: String(decoding: url, as: UTF8.self),
            versionMajor: Int(parser.pointee.http_major), versionMinor: Int(parser.pointee.http_minor),
            keepAlive: http_should_keep_alive(parser) != 0, headers: headers)
        url.removeAll(keepingCapacity: true)
        headers.removeAll(keepingCapacity: true)
    }

    /// Whether a request asked to switch protocols (`Upgrade:`, `CONNECT`): no more HTTP/1 on this connection.
    public var isUpgraded: Bool { upgraded }

    /// Feeds received bytes; returns the requests they completed, in order. Throws on a malformed request (the
    /// connection should get a 400 and close). After an upgrade the rest of the bytes are ignored.
    public func feed(_ bytes: UnsafeRawBufferPointer) throws(HTTPFramingError) -> [HTTPRequestHead] {
        if let refusal { throw refusal }
        guard !upgraded, bytes.count > 0 else { return [] }
        completed.removeAll(keepingCapacity: true)
        let parsed = withUnsafeMutablePointer(to: &parser) { p -> Int in
            p.pointee.data = Unmanaged.passUnretained(self).toOpaque()
            return bytes.withMemoryRebound(to: CChar.self) { chars in
                withUnsafePointer(to: &settings) { http_parser_execute(p, $0, chars.baseAddress, chars.count) }
            }
        }
        if let refusal { throw refusal }
        let errno = withUnsafePointer(to: &parser) { portsweep_http_errno($0) }
        if errno != HPE_OK.rawValue {
            let code = http_errno(rawValue: errno)
            throw HTTPFramingError(name: String(cString: http_errno_name(code)),
                                   reason: String(cString: http_errno_description(code)))
        }
        if withUnsafePointer(to: &parser, { portsweep_http_upgrade($0) }) != 0 {
            upgraded = true
        } else if parsed != bytes.count {
            throw HTTPFramingError(name: "HPE_UNKNOWN", reason: "parser stopped early")
        }
        return completed
    }

    /// Feeds an array of bytes (for tests and small inputs).
    public func feed(_ bytes: [UInt8]) throws(HTTPFramingError) -> [HTTPRequestHead] {
        let result: Result<[HTTPRequestHead], HTTPFramingError> = bytes.withUnsafeBytes { raw in
            Result { () throws(HTTPFramingError) in try feed(raw) }
        }
        return try result.get()
    }
}
