public import UVLoop

/// Whose port a check probes. A check always probes the caller's own address: the peer of the connection, or,
/// when the peer is a trusted proxy, the address that proxy saw, taken from `X-Forwarded-For`. Anything that
/// cannot be pinned to one public client is refused, never replaced by a guess (the proxy's own address, say).
public enum ClientAddress {
    /// Why a request's client could not be told; the text is for the caller.
    public enum Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        case noPeer
        /// A trusted proxy sent no `X-Forwarded-For`, or one naming only trusted proxies.
        case proxyNamedNoClient
        /// An `X-Forwarded-For` entry that is not an address (`unknown`, an obfuscated name, garbage).
        case unparsable(String)
        /// An address taken from `X-Forwarded-For` that no outside client can have.
        case notACaller(IPAddress, String)

        public var description: String {
            switch self {
            case .noPeer: return "Cannot tell the client's address"
            case .proxyNamedNoClient: return "Cannot tell the client's address: the proxy did not name one"
            case .unparsable(let entry):
                return "Cannot tell the client's address: X-Forwarded-For entry '\(entry.prefix(64))' is not an address"
            case .notACaller(let ip, let kind): return "Cannot check \(ip): it is \(kind) address"
            }
        }
    }

    /// The client of a request from `peer` that carried these `X-Forwarded-For` field values (in order).
    ///
    /// A peer that is not a trusted proxy is the client, whatever it says (loopback too: that is how a local
    /// client reaches the service). From a trusted proxy, the client is the rightmost entry that is not itself a
    /// trusted proxy: entries to its left were written by the client and prove nothing.
    public static func resolve(peer: IPAddress?, forwardedFor: [String], trusted: [CIDR]) -> Result<IPAddress, Refusal> {
        guard let peer = peer?.unmapped else { return .failure(.noPeer) }
        func isTrusted(_ ip: IPAddress) -> Bool { trusted.contains { $0.contains(ip) } }
        guard isTrusted(peer) else { return .success(peer) }
        let entries = forwardedFor.flatMap { $0.split(separator: ",") }.map { String($0).trimmed }
        for entry in entries.reversed() {
            guard let ip = parse(entry) else { return .failure(.unparsable(entry)) }
            if isTrusted(ip) { continue }
            if let kind = unreachableKind(ip) { return .failure(.notACaller(ip, kind)) }
            return .success(ip)
        }
        return .failure(.proxyNamedNoClient)
    }

    /// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:5678`; nil for anything else.
    static func parse(_ entry: String) -> IPAddress? {
        var text = Substring(entry)
        if text.hasPrefix("\""), text.hasSuffix("\""), text.count >= 2 { text = text.dropFirst().dropLast() }
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let rest = text[text.index(after: close)...]
            guard rest.isEmpty || (rest.hasPrefix(":") && UInt16(rest.dropFirst()) != nil) else { return nil }
            return IPAddress(String(text[text.index(after: text.startIndex)..<close])).flatMap { $0.family == .v6 ? $0 : nil }
        }
        let colons = text.filter { $0 == ":" }.count
        if colons == 1, let colon = text.firstIndex(of: ":") {
            guard UInt16(text[text.index(after: colon)...]) != nil else { return nil }
            return IPAddress(String(text[..<colon])).flatMap { $0.family == .v4 ? $0 : nil }
        }
        guard !text.isEmpty, text.lowercased() != "localhost" else { return nil }
        return IPAddress(String(text))?.unmapped
    }

    /// What kind of address no client on the outside can have (probing it would reach this server or its
    /// network instead), or nil for an ordinary one.
    static func unreachableKind(_ ip: IPAddress) -> String? {
        if ip.isWildcard { return "an unspecified" }
        if ip.isLoopback { return "a loopback" }
        if ip.isMulticast { return "a multicast" }
        if ip.isBroadcast { return "a broadcast" }
        if ip.isLinkLocal { return "a link-local" }
        return nil
    }
}

extension String {
    var trimmed: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
