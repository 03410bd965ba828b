import PortsweepEngine
import PortsweepHTTP
import PortsweepListen
import Testing
import UVLoop

/// `Listen` in this process, on loopback, without the command: what it answers, what it reports, and loops
/// that stop with no handle left open.
@Suite(.timeLimit(.minutes(1))) struct InProcessListenTests {
    /// A port nobody holds right now: bound on port 0 and let go.
    static func freePort(on loop: EventLoop) async throws -> UInt16 {
        let probe = try await TCPListener.listen(on: SocketAddress(.loopbackV4, port: 0), loop: loop)
        let port = try #require(await probe.localAddress).port
        await probe.close()
        return port
    }

    static func readAll(_ connection: TCPConnection) async throws -> String {
        var reply: [UInt8] = []
        while true {
            let chunk = try await connection.read(timeout: .seconds(5))
            if chunk.isEmpty { break }
            reply += chunk
        }
        return String(decoding: reply, as: UTF8.self)
    }

    @Test func httpRepliesOnItsPortReportsTheConnectionAndClosesClean() async throws {
        let group = try EventLoopGroup(loopCount: 2)
        let port = try await Self.freePort(on: group.loops[0])
        let listen = Listen(ListenConfiguration(ports: PortSet([port]), bind: .loopbackV4, transports: [.tcp]),
                            group: group, descriptors: .current())
        let start = try await listen.start()
        #expect(start.held == 1 && start.failures.isEmpty && start.workers == 0)

        let client = try await TCPConnection.connect(to: SocketAddress(.loopbackV4, port: port), on: group.loops[1],
                                                     timeout: .seconds(5))
        try await client.write(Array("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8), timeout: .seconds(5))
        let reply = try await Self.readAll(client)
        await client.close()
        #expect(reply.hasPrefix("HTTP/1.1 200 OK") && reply.contains("Port test successful!"), "\(reply)")

        var events = listen.events.makeAsyncIterator()
        guard case .connection(let record)? = await events.next() else {
            Issue.record("the first event is not the connection")
            return
        }
        #expect(record.localPort == port && record.requests == 1 && record.client?.ip == .loopbackV4)
        await listen.stop()
        #expect(await events.next() == nil, "the events end when the listen stops")
        group.shutdown()
        #expect(group.loops.map(\.handlesLeftOpen) == [0, 0])
    }

    @Test func aHeldPortIsAFailureWithItsHolderAndTheRestServe() async throws {
        let group = try EventLoopGroup(loopCount: 1)
        let held = try await TCPListener.listen(on: SocketAddress(.anyV4, port: 0), loop: group.loops[0])
        let heldPort = try #require(await held.localAddress).port
        let listen = Listen(ListenConfiguration(ports: PortSet([heldPort]), transports: [.tcp]), group: group,
                            descriptors: .current())
        let start = try await listen.start()
        #expect(start.held == 0)
        #expect(start.failures.map(\.port) == [heldPort] && start.failures.first?.errno == EADDRINUSE)
        #expect(start.failures.first?.holder?.description.contains("pid \(getpid())") == true,
                "\(String(describing: start.failures.first?.holder))")
        await listen.stop()
        await held.close()
        group.shutdown()
        #expect(group.loops[0].handlesLeftOpen == 0)
    }

    /// Echo answers the roster question (however it is split) with the whole listen's roster, and echoes
    /// anything else exactly, a held-back prefix of the question included.
    @Test func echoAnswersTheRosterQuestionAndEchoesEverythingElse() async throws {
        let group = try EventLoopGroup(loopCount: 2)
        let loop = group.loops[0]
        let held = try await TCPListener.listen(on: SocketAddress(.anyV4, port: 0), loop: loop)
        let heldPort = try #require(await held.localAddress).port
        let free = try await Self.freePort(on: loop)
        // The question goes byte by byte: on a machine whose cooperative threads the end-to-end suites keep busy
        // that can take over 10 s, and the slow-client rules (rightly) cut such a client with EPIPE. Off here.
        var patient = ListenLimits()
        patient.connections.minRate = 0
        patient.connections.requestTimeout = .seconds(60)
        let listen = Listen(ListenConfiguration(ports: PortSet([free, heldPort]), transports: [.tcp], reply: .echo,
                                                limits: patient),
                            group: group, descriptors: .current())
        _ = try await listen.start()
        // Whatever fails below, the listen is stopped: a Listen dropped while running leaves its loops busy.
        do {
            let address = SocketAddress(.loopbackV4, port: free)

            func exchange(_ pieces: [[UInt8]]) async throws -> [UInt8] {
                let client = try await TCPConnection.connect(to: address, on: group.loops[1], timeout: .seconds(5))
                for piece in pieces { try await client.write(piece, timeout: .seconds(5)) }
                // Every answer ends its line: read up to it, however the answer is split (the roster, a long line,
                // may come in several reads on a busy machine).
                var back: [UInt8] = []
                while !back.contains(0x0A) {
                    let chunk = try await client.read(timeout: .seconds(5))
                    if chunk.isEmpty { break }
                    back += chunk
                }
                await client.close(reset: true)
                return back
            }

            let question = ListenerRoster.question
            let byteByByte = try await exchange(question.map { [$0] })
            let roster = try #require(ListenerRoster.parse(byteByByte.dropLast()), "\(String(decoding: byteByByte, as: UTF8.self))")
            #expect(roster.held(.tcp) == PortSet([free]))
            #expect(roster.failed == [ListenerRoster.Failed(transport: .tcp, ports: PortSet([heldPort]), error: "EADDRINUSE")])
            #expect(roster.unheld(PortSet([free, heldPort, 1]), transports: [.tcp]).map { "\($0.port) \($0.outcome) \($0.errno)" }
                    == ["1 ERRO \(EADDRNOTAVAIL)", "\(heldPort) USED \(EADDRINUSE)"])

            let prefixThenOther = Array("portsweep w".utf8) + Array("hat?\n".utf8)
            #expect(try await exchange([Array("portsweep w".utf8), Array("hat?\n".utf8)]) == prefixThenOther)
            let probe = Array("client -> server abc\n".utf8)
            #expect(try await exchange([probe]) == probe)
            let longer = question.dropLast() + Array(" and more\n".utf8)
            #expect(try await exchange([Array(longer)]) == Array(longer))
        } catch {
            await listen.stop()
            await held.close()
            group.shutdown()
            throw error
        }
        await listen.stop()
        await held.close()
        group.shutdown()
    }
}

#if canImport(Glibc)
import Glibc
#endif
