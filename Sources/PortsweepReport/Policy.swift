import Foundation
public import PortsweepEngine
import Yams

/// What a sweep is held against (`sweep --expect`): rules naming protocols, ports and an expectation. The first
/// rule that names a port and protocol decides what is expected of it, as in a firewall's rule list; a test no
/// rule names is not judged.
public struct Policy: Sendable, Equatable {
    public var rules: [PolicyRule]

    public init(rules: [PolicyRule]) { self.rules = rules }

    /// The first rule naming `port` over `transport`, by its index.
    public func rule(for port: UInt16, _ transport: Transport) -> Int? {
        rules.firstIndex { $0.transports.contains(transport) && $0.ports.contains(port) }
    }

    /// Every port some rule names, per protocol.
    public func ports(_ transport: Transport) -> PortSet {
        var all = PortSet()
        for rule in rules where rule.transports.contains(transport) { for port in rule.ports { all.insert(port) } }
        return all
    }

    /// The protocols some rule names, TCP first.
    public var transports: [Transport] { Transport.allCases.filter { t in rules.contains { $0.transports.contains(t) } } }

    /// Why a policy could not be read: one line naming the rule or the file.
    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    /// A YAML file: a list of rules, each the command line's text (`tcp 80,443 pass`) or a map with `ports`,
    /// `protocols` (a word or a list; default both) and `expect`; or a map whose `rules` is such a list.
    public static func parse(yaml text: String, file: String) throws(Invalid) -> [PolicyRule] {
        let document: Any?
        do { document = try Yams.load(yaml: text) } catch {
            throw Invalid("cannot read the policy \(file): not YAML (\(String(describing: error).split(separator: "\n").first ?? ""))")
        }
        var list = document as? [Any]
        if list == nil, let map = document as? [String: Any] { list = map["rules"] as? [Any] }
        guard let list, !list.isEmpty else {
            throw Invalid("the policy \(file) has no rules: expected a list such as '- tcp 80,443 pass'")
        }
        var rules: [PolicyRule] = []
        for (index, item) in list.enumerated() {
            let place = "\(file), rule \(index + 1)"
            if let text = item as? String {
                rules.append(try PolicyRule(parsing: text, place: place))
            } else if let map = item as? [String: Any] {
                rules.append(try PolicyRule(map: map, place: place))
            } else {
                throw Invalid("\(place): expected a rule such as 'tcp 80,443 pass' or a map with ports, protocols and expect")
            }
        }
        return rules
    }
}

/// One rule: these protocols on these ports are expected to be...
public struct PolicyRule: Sendable, Equatable {
    public enum Expectation: Sendable, Equatable {
        /// PASS.
        case pass
        /// Anything but PASS.
        case blocked
        /// Not judged (a rule that exempts ports from later rules).
        case any
        /// Exactly this outcome.
        case exactly(Outcome)

        public func accepts(_ outcome: Outcome) -> Bool {
            switch self {
            case .pass: return outcome.isPass
            case .blocked: return !outcome.isPass
            case .any: return true
            case .exactly(let expected): return outcome == expected
            }
        }

        /// As printed: `PASS`, `blocked`, `any`, `FAIL`.
        public var word: String {
            switch self {
            case .pass: return "PASS"
            case .blocked: return "blocked"
            case .any: return "any"
            case .exactly(let outcome): return outcome.word
            }
        }
    }

    public var transports: Set<Transport>
    public var ports: PortSet
    public var expectation: Expectation
    /// The rule as the user wrote it (names it in the output and in JUnit).
    public var text: String

    public init(transports: Set<Transport>, ports: PortSet, expectation: Expectation, text: String) {
        self.transports = transports
        self.ports = ports
        self.expectation = expectation
        self.text = text
    }

    /// `tcp 80,443 pass`, `tcp,udp 1-79 blocked`, `udp 53 SEND`: protocols, ports, word.
    public init(parsing text: String, place: String? = nil) throws(Policy.Invalid) {
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        let name = place.map { "\($0) ('\(text)')" } ?? "invalid --expect '\(text)'"
        guard parts.count == 3 else {
            throw Policy.Invalid("\(name): a rule is PROTOCOLS PORTS WORD, such as 'tcp 80,443 pass' or 'tcp,udp 1-79 blocked'")
        }
        try self.init(protocols: parts[0], ports: parts[1], word: parts[2], text: text, name: name)
    }

    init(map: [String: Any], place: String) throws(Policy.Invalid) {
        let known: Set<String> = ["ports", "protocols", "expect"]
        if let unknown = map.keys.sorted().first(where: { !known.contains($0) }) {
            throw Policy.Invalid("\(place): unknown key '\(unknown)' (a rule has ports, protocols and expect)")
        }
        guard let ports = map["ports"].map({ "\($0)" }), let word = map["expect"].map({ "\($0)" }) else {
            throw Policy.Invalid("\(place): a rule needs ports and expect (protocols defaults to tcp and udp)")
        }
        let protocols: String
        switch map["protocols"] {
        case nil: protocols = "tcp,udp"
        case let list as [Any]: protocols = list.map { "\($0)" }.joined(separator: ",")
        case let value?: protocols = "\(value)"
        }
        try self.init(protocols: protocols, ports: ports, word: word, text: "\(protocols) \(ports) \(word)", name: place)
    }

    private init(protocols: String, ports portText: String, word: String, text: String, name: String) throws(Policy.Invalid) {
        var transports: Set<Transport> = []
        for part in protocols.lowercased().split(separator: ",") {
            switch part {
            case "tcp": transports.insert(.tcp)
            case "udp": transports.insert(.udp)
            case "both": transports.formUnion([.tcp, .udp])
            default: throw Policy.Invalid("\(name): unknown protocol '\(part)' (tcp, udp, tcp,udp)")
            }
        }
        guard !transports.isEmpty else { throw Policy.Invalid("\(name): no protocol (tcp, udp, tcp,udp)") }
        let ports: PortSet
        do { ports = try PortSet(parsing: portText) } catch { throw Policy.Invalid("\(name): \(error.reason)") }
        let expectation: Expectation
        switch word.lowercased() {
        case "pass": expectation = .pass
        case "blocked": expectation = .blocked
        case "any": expectation = .any
        default:
            guard let outcome = Outcome(word: word), !outcome.isPass else {
                throw Policy.Invalid("\(name): unknown word '\(word)' (pass, blocked, any, or FAIL, SEND, RECV, SUDO, USED, ERRO)")
            }
            // A datagram needs no connection: UDP has no FAIL, in either direction.
            if transports.contains(.udp) && outcome.contains(.fail) {
                throw Policy.Invalid("\(name): UDP has no FAIL (a datagram needs no connection): use SEND, RECV, blocked or a TCP rule")
            }
            expectation = .exactly(outcome)
        }
        self.init(transports: transports, ports: ports, expectation: expectation, text: text)
    }
}
