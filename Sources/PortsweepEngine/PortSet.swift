/// A set of ports from 1 to 65535, parsed from the Incoming Port Tester's syntax:
/// `8080`, `1-16384`, `22,80,8000-8100`, and `-` for all of 1-65535.
public struct PortSet: Sendable, Hashable, Sequence, CustomStringConvertible {
    /// One bit per port number; bit 0 is never set.
    private var bits: [UInt64]
    public private(set) var count: Int

    public init() {
        bits = [UInt64](repeating: 0, count: 1024)
        count = 0
    }

    public init<S: Sequence>(_ ports: S) where S.Element == UInt16 {
        self.init()
        for port in ports { insert(port) }
    }

    public init(range: ClosedRange<UInt16>) {
        self.init(range)
    }

    public static let all = PortSet(range: 1...65535)

    public mutating func insert(_ port: UInt16) {
        precondition(port != 0, "port 0 is not a port")
        let (word, bit) = (Int(port) >> 6, UInt64(1) << (UInt64(port) & 63))
        if bits[word] & bit == 0 {
            bits[word] |= bit
            count += 1
        }
    }

    public mutating func remove(_ port: UInt16) {
        let (word, bit) = (Int(port) >> 6, UInt64(1) << (UInt64(port) & 63))
        if bits[word] & bit != 0 {
            bits[word] &= ~bit
            count -= 1
        }
    }

    public func contains(_ port: UInt16) -> Bool {
        bits[Int(port) >> 6] & (UInt64(1) << (UInt64(port) & 63)) != 0
    }

    public var isEmpty: Bool { count == 0 }

    public func makeIterator() -> AnyIterator<UInt16> {
        var port = 0
        let bits = self.bits
        return AnyIterator {
            while port < 65535 {
                port += 1
                if bits[port >> 6] & (UInt64(1) << UInt64(port & 63)) != 0 { return UInt16(port) }
            }
            return nil
        }
    }

    /// Ascending ports as an array.
    public var sorted: [UInt16] { Array(self) }

    /// Consecutive runs, as the spec would write them: `22,80,8000-8100`.
    public var description: String {
        var parts: [String] = []
        var start: UInt16? = nil
        var last: UInt16 = 0
        for port in self {
            if let s = start, port == last &+ 1 {
                last = port
                _ = s
                continue
            }
            if let s = start { parts.append(s == last ? "\(s)" : "\(s)-\(last)") }
            start = port
            last = port
        }
        if let s = start { parts.append(s == last ? "\(s)" : "\(s)-\(last)") }
        return parts.joined(separator: ",")
    }
}

/// Why a port spec was refused; the text names the offending value.
public struct PortSpecError: Error, Sendable, Equatable, CustomStringConvertible {
    public let spec: String
    public let reason: String
    public init(spec: String, reason: String) {
        self.spec = spec
        self.reason = reason
    }
    public var description: String { "invalid port spec '\(spec)': \(reason)" }
}

extension PortSet {
    /// Parses a spec; throws with a message naming the bad part.
    public init(parsing spec: String) throws(PortSpecError) {
        self.init()
        let trimmed = spec.trimmingSpaces
        if trimmed == "-" {
            self = .all
            return
        }
        guard !trimmed.isEmpty else { throw PortSpecError(spec: spec, reason: "it is empty") }
        for rawPart in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            let part = String(rawPart).trimmingSpaces
            guard !part.isEmpty else { throw PortSpecError(spec: spec, reason: "empty item in the list") }
            let bounds = part.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            let low = try PortSet.port(bounds[0], in: spec)
            let high = bounds.count == 2 ? try PortSet.port(bounds[1], in: spec) : low
            guard low <= high else {
                throw PortSpecError(spec: spec, reason: "range \(part) runs backwards (\(low) > \(high))")
            }
            for port in low...high { insert(port) }
        }
    }

    private static func port(_ text: String, in spec: String) throws(PortSpecError) -> UInt16 {
        let text = text.trimmingSpaces
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw PortSpecError(spec: spec, reason: "'\(text)' is not a port number")
        }
        guard text.count <= 5, let value = Int(text), (1...65535).contains(value) else {
            throw PortSpecError(spec: spec, reason: "port \(text) is outside 1-65535")
        }
        return UInt16(value)
    }
}

extension String {
    var trimmingSpaces: String {
        String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}

extension PortSet: Codable {
    /// As its spec: `22,80,8000-8100` (empty for no ports).
    public init(from decoder: any Decoder) throws {
        let spec = try decoder.singleValueContainer().decode(String.self)
        if spec.isEmpty {
            self.init()
            return
        }
        do { try self.init(parsing: spec) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
