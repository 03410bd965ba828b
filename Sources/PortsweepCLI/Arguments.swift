public import ArgumentParser
public import PortsweepEngine
public import UVLoop
import PortsweepListen

// Each value of the command line is parsed once, into its type, where it is declared: a bad value stops the
// parse with one line naming the option, the value and the reason ("The value '70000' is invalid for
// '--ports <RANGE>': port 70000 is not from 1 to 65535"), and `run()` reads typed values.

/// Why a command-line value is not one.
public struct ArgumentReason: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// A type read from one command-line value, with a reason when the text is not one. Options use `parse` as
/// their transform (argument-parser then names the option and the value before the reason);
/// `ExpressibleByArgument` gives the same parse to defaults and completions.
public protocol ArgumentValue: ExpressibleByArgument {
    static func parse(_ text: String) throws -> Self
}

extension ArgumentValue {
    public init?(argument: String) {
        guard let value = try? Self.parse(argument) else { return nil }
        self = value
    }
}

extension PortSet: ExpressibleByArgument, ArgumentValue {
    public static func parse(_ text: String) throws -> PortSet {
        do { return try PortSet(parsing: text) } catch { throw ArgumentReason( error.reason) }
    }
}

extension IPAddress: ExpressibleByArgument, ArgumentValue {
    public static func parse(_ text: String) throws -> IPAddress {
        guard let address = IPAddress(text) else { throw ArgumentReason(ListenForm.notAnAddress) }
        return address
    }
    public var defaultValueDescription: String { description }
}

extension SocketAddress: ExpressibleByArgument, ArgumentValue {
    public static func parse(_ text: String) throws -> SocketAddress {
        guard let address = SocketAddress(parsing: text) else {
            throw ArgumentReason( "expected ADDR:PORT, such as 0.0.0.0:8000 or [::]:8000")
        }
        return address
    }
    public var defaultValueDescription: String { description }
}

extension CIDR: ExpressibleByArgument, ArgumentValue {
    public static func parse(_ text: String) throws -> CIDR {
        guard let block = CIDR(text) else { throw ArgumentReason("not an address block such as 10.0.0.0/8") }
        return block
    }
    public var defaultValueDescription: String { description }
}

/// A duration given in seconds, fractions allowed: more than 0 and finite. (Upper bounds differ per option and
/// are checked by the command's `validate()`.)
struct Seconds: ArgumentValue, Sendable, Equatable {
    let value: Double

    init(_ value: Double) { self.value = value }

    static func parse(_ text: String) throws -> Seconds {
        guard let value = Double(text), value.isFinite, value > 0 else {
            throw ArgumentReason( "must be a number of seconds more than 0")
        }
        return Seconds(value)
    }

    var duration: Duration { .milliseconds(Int64((value * 1000).rounded(.up))) }
    var defaultValueDescription: String { SweepCommand.text(value) }
}

/// An address, or a host name resolved when the command runs (`uv_getaddrinfo`). Text made of digits and dots,
/// or holding a colon, is meant as an address and must be one: `999.1.1.1` is a bad address, not a name.
enum HostArgument: ArgumentValue, Sendable, Equatable, CustomStringConvertible {
    case address(IPAddress)
    case name(String)

    static func parse(_ text: String) throws -> HostArgument {
        if let address = IPAddress(text) { return .address(address) }
        if text.contains(":") || text.allSatisfy({ $0.isNumber || $0 == "." }) {
            throw ArgumentReason("not an IPv4 or IPv6 address")
        }
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        let valid = text.utf8.count <= 253 && labels.allSatisfy { label in
            (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                && label.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" }
        }
        guard valid else { throw ArgumentReason("not an address or a host name") }
        return .name(text)
    }

    var address: IPAddress? {
        if case .address(let address) = self { return address }
        return nil
    }

    var description: String {
        switch self {
        case .address(let address): "\(address)"
        case .name(let name): name
        }
    }
    var defaultValueDescription: String { description }

    /// A name whose addresses are all of the other family than the one asked for.
    struct WrongFamily: Error, CustomStringConvertible {
        let name: String, family: IPAddress.Family, addresses: [IPAddress]
        var description: String {
            "'\(name)' has no \(family == .v4 ? "IPv4" : "IPv6") address (only \(addresses.map(\.description).joined(separator: ", ")))"
        }
    }

    /// The address to use: the given one, or the name's first address (of `family`, when given).
    func resolve(family: IPAddress.Family?, on loop: EventLoop) async throws -> IPAddress {
        switch self {
        case .address(let address): return address
        case .name(let name):
            let addresses = try await Resolver.resolve(name, on: loop)
            guard let family else { return addresses[0] }
            guard let match = addresses.first(where: { $0.family == family }) else {
                throw WrongFamily(name: name, family: family, addresses: addresses)
            }
            return match
        }
    }
}

/// `--ipv4` / `--ipv6`: the address family of a host name's address.
enum AddressFamilyFlag: String, EnumerableFlag, CustomStringConvertible {
    case ipv4, ipv6
    var family: IPAddress.Family { self == .ipv4 ? .v4 : .v6 }
    var description: String { rawValue }
    static func help(for value: AddressFamilyFlag) -> ArgumentHelp? {
        value == .ipv4 ? "Use a host name's IPv4 address (--target, --to, --via). (default: the resolver's first, of --bind's family when given)"
            : "Use a host name's IPv6 address; the default target becomes ::1."
    }
}

/// `--tcp-only` / `--udp-only`, shared by sweep and listen.
struct TransportOptions: ParsableArguments {
    @Flag(name: .long, help: "TCP only (default: TCP and UDP).")
    var tcpOnly = false

    @Flag(name: .long, help: "UDP only (default: TCP and UDP).")
    var udpOnly = false

    func validate() throws {
        if tcpOnly && udpOnly { throw ValidationError("--tcp-only and --udp-only exclude each other") }
    }

    var transports: Set<Transport> { tcpOnly ? [.tcp] : udpOnly ? [.udp] : [.tcp, .udp] }
}

/// `--via http://HOST[:PORT][/]`: a checker (`portsweep serve`). Plain HTTP: TLS goes to a proxy in front.
/// `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`: the authority of an http:// or redis:// URL.
func hostAndPort(_ rest: Substring, defaultPort: UInt16) throws -> (HostArgument, UInt16) {
    var hostText = String(rest)
    var port = defaultPort
    if rest.hasPrefix("[") {
        guard let close = rest.firstIndex(of: "]") else { throw ArgumentReason("an IPv6 address in brackets has no ]") }
        hostText = String(rest[rest.index(after: rest.startIndex)..<close])
        let after = rest[rest.index(after: close)...]
        if !after.isEmpty {
            guard after.hasPrefix(":"), let value = UInt16(after.dropFirst()), value > 0 else { throw ArgumentReason("bad port after the address") }
            port = value
        }
    } else if let colon = rest.lastIndex(of: ":") {
        hostText = String(rest[..<colon])
        guard let value = UInt16(rest[rest.index(after: colon)...]), value > 0 else { throw ArgumentReason("the port must be from 1 to 65535") }
        port = value
    }
    return (try HostArgument.parse(hostText), port)
}

/// `--rate-limit-store redis://HOST[:PORT]` (6379 by default). No password in it: a command line is readable by
/// every user of the machine (ps, /proc/PID/cmdline).
struct RedisURL: ArgumentValue, Sendable, Equatable, CustomStringConvertible {
    let text: String
    let host: HostArgument
    let port: UInt16

    static func parse(_ text: String) throws -> RedisURL {
        guard text.lowercased().hasPrefix("redis://") else {
            throw ArgumentReason(text.lowercased().hasPrefix("rediss://") ? "TLS to Redis (rediss://) is not supported: use redis:// on a private network"
                                 : "expected redis://HOST[:PORT]")
        }
        var rest = Substring(text.dropFirst(8))
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        if rest.contains("@") {
            throw ArgumentReason("no password in the URL (every user can read a command line): use --redis-password-file or $PORTSWEEP_REDIS_PASSWORD")
        }
        guard !rest.isEmpty, !rest.contains("/"), !rest.contains("?") else {
            throw ArgumentReason("expected redis://HOST[:PORT], without a path or query")
        }
        let (host, port) = try hostAndPort(rest, defaultPort: 6379)
        return RedisURL(text: text, host: host, port: port)
    }

    var description: String { text }
    var defaultValueDescription: String { text }
}

struct CheckerURL: ArgumentValue, Sendable, Equatable, CustomStringConvertible {
    let text: String
    let host: HostArgument
    let port: UInt16

    static func parse(_ text: String) throws -> CheckerURL {
        if text.lowercased().hasPrefix("https://") {
            throw ArgumentReason("https is not spoken to a checker: use http:// (put TLS in a proxy in front of the checker)")
        }
        guard text.lowercased().hasPrefix("http://") else { throw ArgumentReason("expected http://HOST[:PORT]") }
        var rest = Substring(text.dropFirst(7))
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.isEmpty, !rest.contains("/"), !rest.contains("@"), !rest.contains("?") else {
            throw ArgumentReason("expected http://HOST[:PORT], without a path, user or query")
        }
        let (host, port) = try hostAndPort(rest, defaultPort: 80)
        return CheckerURL(text: text, host: host, port: port)
    }

    /// The Host header: the name (or address) and the port as given.
    var hostHeader: String {
        let name = host.address.map { $0.family == .v6 ? "[\($0)]" : "\($0)" } ?? host.description
        return port == 80 ? name : "\(name):\(port)"
    }

    var description: String { text }
    var defaultValueDescription: String { text }
}
