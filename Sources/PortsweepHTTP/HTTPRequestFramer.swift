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

    public var isHead: Bool { method == "HEAD" }

    public static func == (a: HTTPRequestHead, b: HTTPRequestHead) -> Bool {
        a.method == b.method && a.target == b.target && a.versionMajor == b.versionMajor
            && a.versionMinor == b.versionMinor && a.keepAlive == b.keepAlive
            && a.headers.map(\.name) == b.headers.map(\.name) && a.headers.map(\.value) == b.headers.map(\.value)
    }
}

/// A request the framer refused: the parser's error name (`HPE_INVALID_METHOD`...) and description.
public struct HTTPFramingError: Error, Sendable, Equatable, CustomStringConvertible {
    public let name: String
    public let reason: String
    public var description: String { "\(name): \(reason)" }
}

/// Frames HTTP/1.x requests out of a byte stream with Debian's http-parser (2.9.4, request-smuggling fixes):
/// pipelined requests, bodies (Content-Length or chunked, read and dropped), keep-alive. One framer per
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

    /// `collectHeaders`: keep header fields (costs allocations; a plain reply needs none).
    public init(collectHeaders: Bool = false) {
        self.collectHeaders = collectHeaders
        http_parser_init(&parser, HTTP_REQUEST)
        http_parser_settings_init(&settings)
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
            return 0
        }
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
        if collectHeaders && !field.isEmpty { flushHeader() }
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
        guard !upgraded, bytes.count > 0 else { return [] }
        completed.removeAll(keepingCapacity: true)
        let parsed = withUnsafeMutablePointer(to: &parser) { p -> Int in
            p.pointee.data = Unmanaged.passUnretained(self).toOpaque()
            return bytes.withMemoryRebound(to: CChar.self) { chars in
                withUnsafePointer(to: &settings) { http_parser_execute(p, $0, chars.baseAddress, chars.count) }
            }
        }
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
