import CHTTPParser

/// Reads one HTTP/1.1 response out of a byte stream with http-parser, for the client side (`sweep --via`
/// asking a checker): the status, the headers, the body as it comes (chunks decoded), and its end. One reader
/// per response, used from one task.
public final class HTTPResponseReader {
    public enum Event: Sendable, Equatable {
        case head(status: Int, headers: [String: String])
        case body([UInt8])
        case end
    }

    private var parser = http_parser()
    private var settings = http_parser_settings()
    private var field: [UInt8] = []
    private var value: [UInt8] = []
    private var headers: [String: String] = [:]
    private var events: [Event] = []
    private var headBytes = 0
    private let maxHeadBytes: Int
    public private(set) var isComplete = false

    /// `maxHeadBytes`: a head longer than this is refused (a checker is not trusted to be sane).
    public init(maxHeadBytes: Int = 16 * 1024) {
        self.maxHeadBytes = maxHeadBytes
        http_parser_init(&parser, HTTP_RESPONSE)
        http_parser_settings_init(&settings)
        settings.on_header_field = { parser, at, length in
            let reader = HTTPResponseReader.from(parser)
            if !reader.value.isEmpty { reader.flushHeader() }
            reader.field.append(contentsOf: UnsafeRawBufferPointer(start: at, count: length))
            return reader.countHead(length)
        }
        settings.on_header_value = { parser, at, length in
            let reader = HTTPResponseReader.from(parser)
            reader.value.append(contentsOf: UnsafeRawBufferPointer(start: at, count: length))
            return reader.countHead(length)
        }
        settings.on_headers_complete = { parser in
            let reader = HTTPResponseReader.from(parser)
            if !reader.field.isEmpty { reader.flushHeader() }
            reader.events.append(.head(status: Int(parser!.pointee.status_code), headers: reader.headers))
            return 0
        }
        settings.on_body = { parser, at, length in
            HTTPResponseReader.from(parser).events.append(.body(Array(UnsafeRawBufferPointer(start: at, count: length))))
            return 0
        }
        settings.on_message_complete = { parser in
            let reader = HTTPResponseReader.from(parser)
            reader.isComplete = true
            reader.events.append(.end)
            // One response per reader: whatever follows is not ours to read.
            http_parser_pause(parser, 1)
            return 0
        }
    }

    private static func from(_ parser: UnsafeMutablePointer<http_parser>?) -> HTTPResponseReader {
        Unmanaged<HTTPResponseReader>.fromOpaque(parser!.pointee.data).takeUnretainedValue()
    }

    private func countHead(_ length: Int) -> Int32 {
        headBytes += length
        return headBytes > maxHeadBytes ? 1 : 0
    }

    private func flushHeader() {
        headers[String(decoding: field, as: UTF8.self).lowercased()] = String(decoding: value, as: UTF8.self)
        field.removeAll(keepingCapacity: true)
        value.removeAll(keepingCapacity: true)
    }

    /// Feeds received bytes; returns what they completed. Throws on a malformed response.
    public func feed(_ bytes: [UInt8]) throws(HTTPFramingError) -> [Event] {
        guard !isComplete, !bytes.isEmpty else { return [] }
        events.removeAll(keepingCapacity: true)
        _ = withUnsafeMutablePointer(to: &parser) { p -> Int in
            p.pointee.data = Unmanaged.passUnretained(self).toOpaque()
            return bytes.withUnsafeBufferPointer { raw in
                raw.withMemoryRebound(to: CChar.self) { chars in
                    withUnsafePointer(to: &settings) { http_parser_execute(p, $0, chars.baseAddress, chars.count) }
                }
            }
        }
        let errno = withUnsafePointer(to: &parser) { portsweep_http_errno($0) }
        if errno != HPE_OK.rawValue && !(isComplete && errno == HPE_PAUSED.rawValue) {
            let code = http_errno(rawValue: errno)
            throw HTTPFramingError(name: String(cString: http_errno_name(code)),
                                   reason: String(cString: http_errno_description(code)))
        }
        return events
    }

    /// The peer closed: a body read to the close ends here; anything else half-way is an error.
    public func finish() throws(HTTPFramingError) -> [Event] {
        guard !isComplete else { return [] }
        events.removeAll(keepingCapacity: true)
        _ = withUnsafeMutablePointer(to: &parser) { p -> Int in
            p.pointee.data = Unmanaged.passUnretained(self).toOpaque()
            return withUnsafePointer(to: &settings) { http_parser_execute(p, $0, nil, 0) }
        }
        guard isComplete else { throw HTTPFramingError(name: "HPE_INVALID_EOF_STATE", reason: "the response was cut off") }
        return events
    }
}
