import PortsweepHTTP
import PortsweepServe
import Testing
import UVLoop

/// The check service behind the HTTP server, in this process, on port 0: a real probe of a real listener,
/// the drain, and loops that stop with no handle left open.
@Suite(.timeLimit(.minutes(1))) struct InProcessServeTests {
    static func get(_ path: String, from server: SocketAddress, on loop: EventLoop) async throws -> String {
        let client = try await TCPConnection.connect(to: server, on: loop, timeout: .seconds(5))
        try await client.write(Array("GET \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8), timeout: .seconds(5))
        var reply: [UInt8] = []
        while true {
            let chunk = try await client.read(timeout: .seconds(10))
            if chunk.isEmpty { break }
            reply += chunk
        }
        await client.close()
        return String(decoding: reply, as: UTF8.self)
    }

    @Test func aCheckProbesTheCallerAndTheServerDrainsAndClosesClean() async throws {
        let group = try EventLoopGroup(loopCount: 2)
        let service = CheckService(CheckConfiguration(), group: group)
        let server = try await HTTPServer(on: SocketAddress(.loopbackV4, port: 0), loop: group.loops[0],
                                          limits: ConnectionLimits()) { await service.handle($0) }
        #expect(server.localAddress.port != 0)
        // Something of the caller's (this process) to find: a listener on any address.
        let open = try await TCPListener.listen(on: SocketAddress(.anyV4, port: 0), loop: group.loops[1])
        let openPort = try #require(await open.localAddress).port
        let accepting = Task { try? await open.accept(timeout: .seconds(10)) }

        let reachable = try await Self.get("/check_port?port=\(openPort)&protocol=tcp&format=json", from: server.localAddress,
                                           on: group.loops[1])
        #expect(reachable.hasPrefix("HTTP/1.1 200") && reachable.contains("\"Reachable\""), "\(reachable)")
        let bad = try await Self.get("/check_port?port=70000", from: server.localAddress, on: group.loops[1])
        #expect(bad.hasPrefix("HTTP/1.1 400"), "\(bad)")

        if let accepted = await accepting.value { await accepted.close() }
        await open.close()
        await server.drain(within: .seconds(5))
        await server.stop()
        group.shutdown()
        #expect(group.loops.map(\.handlesLeftOpen) == [0, 0])
    }

    @Test func aDrainThatRunsOutOfTimeLeavesNoTimerOpen() async throws {
        let group = try EventLoopGroup(loopCount: 1)
        let (started, handlerStarted) = AsyncStream<Void>.makeStream()
        // A handler that answers only after the drain's deadline.
        let server = try await HTTPServer(on: SocketAddress(.loopbackV4, port: 0), loop: group.loops[0],
                                          limits: ConnectionLimits()) { _ in
            handlerStarted.yield()
            try? await Task.sleep(for: .milliseconds(500))
            return ServerResponse(status: .ok, body: Array("late\n".utf8))
        }
        let client = try await TCPConnection.connect(to: server.localAddress, on: group.loops[0], timeout: .seconds(5))
        try await client.write(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), timeout: .seconds(5))
        var iterator = started.makeAsyncIterator()
        await iterator.next()  // the request is in progress
        await server.drain(within: .milliseconds(50))
        await client.close()
        await server.stop()
        try await Task.sleep(for: .milliseconds(600))  // the late handler's answer lands on a closed connection
        group.shutdown()
        #expect(group.loops[0].handlesLeftOpen == 0)
    }
}
