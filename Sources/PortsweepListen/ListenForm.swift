public import PortsweepEngine
public import UVLoop

/// What a person chooses for a listen — ports, bind address, protocols, reply — as text, from the command line
/// or the dashboard's form, checked by this one code with the command line's own messages (so the page says
/// exactly what `portsweep listen` would).
public struct ListenForm: Sendable, Codable, Equatable {
    public var ports: String
    public var bind: String
    /// `tcp`, `udp` or `both`.
    public var protocols: String
    public var reply: String

    public init(ports: String, bind: String = "0.0.0.0", protocols: String = "both", reply: String = "http") {
        self.ports = ports
        self.bind = bind
        self.protocols = protocols
        self.reply = reply
    }

    /// The choice, checked.
    public struct Choice: Sendable, Equatable {
        public var ports: PortSet
        public var bind: IPAddress
        public var transports: Set<Transport>
        public var reply: ReplyMode
    }

    /// Why a form is not a listen: one line, naming the field's option and the value.
    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    public static let missingPorts = "missing --ports (such as --ports 8080 or --ports 8000-8100)"
    public static let notAnAddress = "not an IPv4 or IPv6 address"

    /// argument-parser's words for a value its transform refused, which the command line prints.
    public static func invalidValue(_ value: String, option: String, reason: String) -> String {
        "The value '\(value)' is invalid for '\(option)': \(reason)"
    }

    public func validated() throws(Invalid) -> Choice {
        let portsText = ports.withoutSurroundingBlanks
        guard !portsText.isEmpty else { throw Invalid(description: Self.missingPorts) }
        let portSet: PortSet
        do {
            portSet = try PortSet(parsing: portsText)
        } catch {
            throw Invalid(description: Self.invalidValue(portsText, option: "--ports <RANGE>", reason: error.reason))
        }
        let bindText = bind.withoutSurroundingBlanks
        guard let address = IPAddress(bindText.isEmpty ? "0.0.0.0" : bindText) else {
            throw Invalid(description: Self.invalidValue(bindText, option: "--bind <ADDR>", reason: Self.notAnAddress))
        }
        let transports: Set<Transport>
        switch protocols.lowercased() {
        case "tcp": transports = [.tcp]
        case "udp": transports = [.udp]
        case "both", "": transports = [.tcp, .udp]
        default: throw Invalid(description: "invalid protocols '\(protocols)': tcp, udp or both")
        }
        guard let mode = ReplyMode(rawValue: reply.lowercased()) else {
            let choices = ReplyMode.allCases.map { "'\($0.rawValue)'" }
            throw Invalid(description: "The value '\(reply)' is invalid for '--reply <reply>'. Please provide one of "
                          + choices.dropLast().joined(separator: ", ") + " or " + choices.last! + ".")
        }
        return Choice(ports: portSet, bind: address, transports: transports, reply: mode)
    }
}

extension String {
    var withoutSurroundingBlanks: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
