import ArgumentParser
@testable import PortsweepCLI
import PortsweepEngine
import PortsweepListen
import Testing
import UVLoop

/// The command line parsed in this process: each value parsed once, bad values named in one line.
@Suite struct ParsingTests {
    static func message(_ arguments: [String]) -> String? {
        do {
            _ = try PortsweepCommand.parseAsRoot(joinNegativeValues(defaultOptionalValues(arguments)))
            return nil
        } catch {
            return PortsweepCommand.message(for: error)
        }
    }

    @Test(arguments: [
        (["sweep", "--ports", "70000"], "70000"),
        (["sweep", "--target", "999.1.1.1"], "999.1.1.1"),
        (["sweep", "--timeout", "-1"], "-1"),
        (["listen", "--ports", "1", "--reply", "loud"], "loud"),
        (["listen", "--ports", "1", "--bind", "nowhere"], "nowhere"),
        (["serve", "--listen", "localhost"], "localhost"),
        (["serve", "--trust-proxy", "10.0.0.0/99"], "10.0.0.0/99"),
        (["serve", "--rate-limit", "4"], "'4'"),
        (["listen", "--ports", "1", "--idle-timeout", "0"], "'0'"),
    ])
    func aBadValueIsNamed(arguments: [String], value: String) {
        let message = Self.message(arguments)
        #expect(message?.contains(value) == true, "\(arguments): \(message ?? "parsed")")
    }

    /// A host name is kept as a name (resolved when the command runs); digits and dots must be an address.
    @Test func targetsAreAddressesOrNames() throws {
        #expect(try HostArgument.parse("checker.example") == .name("checker.example"))
        #expect(try HostArgument.parse("203.0.113.7") == .address(IPAddress("203.0.113.7")!))
        for bad in ["999.1.1.1", "1.2.3", "::zz", "bad_name", "-x.example", "a..b", String(repeating: "a", count: 64)] {
            #expect(throws: (any Error).self, "\(bad)") { try HostArgument.parse(bad) }
        }
    }

    /// Each value is parsed once, where it is declared: the command holds typed values.
    @Test func valuesArriveTyped() throws {
        let sweep = try #require(try PortsweepCommand.parseAsRoot(["sweep", "--ports", "1-3,7", "--target", "::1", "--timeout", "0.25", "--tcp-only"]) as? SweepCommand)
        #expect(sweep.ports?.sorted == [1, 2, 3, 7] && sweep.target == .address(.loopbackV6))
        #expect(sweep.timeout.duration == .milliseconds(250) && sweep.protocols.transports == [.tcp])
        let serve = try #require(try PortsweepCommand.parseAsRoot(["serve", "--listen", "[::1]:8080", "--trust-proxy", "10.0.0.0/8", "--rate-limit", "off"]) as? ServeCommand)
        #expect(serve.listen == SocketAddress(.loopbackV6, port: 8080) && serve.trustProxy == [CIDR("10.0.0.0/8")!])
        #expect(serve.rateLimit.limit == nil)
        let listen = try #require(try PortsweepCommand.parseAsRoot(["listen", "--ports", "8000", "--udp-only"]) as? ListenCommand)
        #expect(listen.bind == .anyV4 && listen.protocols.transports == [.udp] && listen.idleTimeout.value == 60)
    }

    @Test func goodValuesParse() throws {
        #expect(Self.message(["sweep", "--ports", "1-1024,8080", "--target", "127.0.0.1"]) == nil)
        #expect(Self.message(["listen", "--ports", "8000-8010", "--reply", "echo", "--bind", "::1"]) == nil)
        #expect(Self.message(["serve", "--listen", "[::1]:8080"]) == nil)
    }
}

/// `--dashboard` with and without its value.
@Suite struct DashboardOptionTests {
    static func parse(_ arguments: [String]) throws -> SweepCommand {
        let command = try PortsweepCommand.parseAsRoot(joinNegativeValues(defaultOptionalValues(arguments)))
        return try #require(command as? SweepCommand)
    }

    @Test func aBareDashboardServesOnLoopback9900() throws {
        #expect(try Self.parse(["sweep", "--dashboard"]).dashboard == SocketAddress(.loopbackV4, port: 9900))
        #expect(try Self.parse(["sweep", "--dashboard", "--ports", "80"]).dashboard == SocketAddress(.loopbackV4, port: 9900))
        #expect(try Self.parse(["sweep", "--dashboard", "0.0.0.0:8080"]).dashboard == SocketAddress(.anyV4, port: 8080))
        #expect(try Self.parse(["sweep", "--dashboard=[::1]:9901"]).dashboard == SocketAddress(.loopbackV6, port: 9901))
        #expect(try Self.parse(["sweep"]).dashboard == nil)
    }

    @Test func aBadDashboardAddressIsNamed() {
        #expect(ParsingTests.message(["sweep", "--dashboard", "localhost:99999"])?.contains("localhost:99999") == true)
        #expect(ParsingTests.message(["sweep", "--dashboard", "--test-single-port", "80"])?.contains("--dashboard 127.0.0.1:9900") == true)
    }
}

/// The listen dashboard's form is checked by `ListenForm`, with the command line's own messages.
@Suite struct ListenFormTests {
    @Test(arguments: [
        (["--ports", "70000"], ListenForm(ports: "70000")),
        (["--ports", "5-3"], ListenForm(ports: "5-3")),
        (["--ports", "80", "--bind", "1.2.3"], ListenForm(ports: "80", bind: "1.2.3")),
        (["--ports", "80", "--reply", "foo"], ListenForm(ports: "80", reply: "foo")),
    ])
    func theFormSaysWhatTheCommandLineSays(arguments: [String], form: ListenForm) {
        let cli = ParsingTests.message(["listen"] + arguments)
        #expect(cli != nil)
        #expect(throws: ListenForm.Invalid(description: cli ?? "")) { try form.validated() }
    }

    @Test func missingPortsIsTheSameLineToo() {
        #expect(ParsingTests.message(["listen"]) == ListenForm.missingPorts)
        #expect(throws: ListenForm.Invalid(description: ListenForm.missingPorts)) { try ListenForm(ports: " ").validated() }
        #expect(ParsingTests.message(["listen", "--dashboard"]) == nil, "with a page, the ports can come from its form")
    }

    @Test func aGoodFormIsAChoice() throws {
        let choice = try ListenForm(ports: "8000-8002", bind: "::", protocols: "udp", reply: "echo").validated()
        #expect(choice.ports.count == 3 && choice.bind == IPAddress("::") && choice.transports == [.udp] && choice.reply == .echo)
    }
}
