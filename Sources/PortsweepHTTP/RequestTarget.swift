/// A request target, `/path?a=1&b=2`: the path, and the query's items percent-decoded (`+` is a space; the first
/// of a repeated name wins). An item whose escapes are broken (`%G1`, a lone `%`) or do not decode to UTF-8 is
/// kept as written, as Foundation's `removingPercentEncoding` would refuse it. Decoded on the bytes: this runs
/// for every request, and Foundation's string search and decoding cost as much as the rest of a check.
public struct RequestTarget: Sendable, Equatable {
    public let path: String
    public let query: [String: String]

    public init(_ target: String) {
        guard let mark = target.utf8.firstIndex(of: UInt8(ascii: "?")) else {
            path = target
            query = [:]
            return
        }
        path = String(target[..<mark])
        var items: [String: String] = [:]
        for pair in target[target.index(after: mark)...].split(separator: "&") {
            let equals = pair.utf8.firstIndex(of: UInt8(ascii: "="))
            let name = RequestTarget.decode(equals.map { pair[..<$0] } ?? pair[...])
            if items[name] == nil { items[name] = equals.map { RequestTarget.decode(pair[pair.index(after: $0)...]) } ?? "" }
        }
        query = items
    }

    /// One name or value: `+` and `%XX` decoded, or the text as written when that fails.
    static func decode(_ text: Substring) -> String {
        let utf8 = text.utf8
        guard utf8.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else { return String(text) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
        var index = utf8.startIndex
        while index != utf8.endIndex {
            let byte = utf8[index]
            index = utf8.index(after: index)
            switch byte {
            case UInt8(ascii: "+"):
                bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard index != utf8.endIndex, let high = hexValue(utf8[index]) else { return String(text) }
                index = utf8.index(after: index)
                guard index != utf8.endIndex, let low = hexValue(utf8[index]) else { return String(text) }
                index = utf8.index(after: index)
                bytes.append(high << 4 | low)
            default:
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self) ?? String(text)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
