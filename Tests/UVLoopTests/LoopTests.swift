import Foundation
import Synchronization
import Testing
import UVLoop

/// The loop layer on real loopback sockets: the executor, the async TCP API, deadlines, cancellation.
@Suite struct LoopTests {
    static let group = try! EventLoopGroup(loopCount: 2)

    actor OnLoop: LoopActor {
        nonisolated let loop: EventLoop
        init(_ loop: EventLoop) { self.loop = loop }
        func onLoopThread() -> Bool { loop.inEventLoop }
    }

    @Test func actorsAndTasksRunOnTheLoopThread() async {
        let loop = Self.group.loops[0]
        #expect(await OnLoop(loop).onLoopThread())
        #expect(!loop.inEventLoop)
        let onLoop = await withTaskGroup(of: Bool.self) { group in
            group.addTask(executorPreference: loop) { loop.inEventLoop }
            return await group.next()!
        }
        #expect(onLoop)
    }

    @Test func echoOverLoopback() async throws {
        let loop = Self.group.next()
        let listener = try await TCPListener.listen(on: SocketAddress(.loopbackV4, port: 0), loop: loop)
        let address = try #require(await listener.localAddress)
        #expect(address.port != 0)
        async let accepted = listener.accept(timeout: .seconds(5))
        let client = try await TCPConnection.connect(to: address, on: Self.group.next(), timeout: .seconds(5))
        let server = try await accepted
        try await client.write(Array("client -> server\n".utf8), timeout: .seconds(5))
        let got = try await server.read(exactly: 17, timeout: .seconds(5))
        #expect(String(decoding: got, as: UTF8.self) == "client -> server\n")
        try await server.write(Array("server -> client\n".utf8), timeout: .seconds(5))
        #expect(String(decoding: try await client.read(exactly: 17, timeout: .seconds(5)), as: UTF8.self) == "server -> client\n")
        await server.close()
        #expect(try await client.read(timeout: .seconds(5)).isEmpty)  // EOF
        await client.close()
        await listener.close()
    }

    /// libuv writes with plain `write()`: to a peer that reset the connection the second write is EPIPE, and with
    /// SIGPIPE at its default that kills the process. A hostile client must cost an error, never the server.
    @Test func writingToAPeerThatResetIsAnErrorNotASignal() async throws {
        let loop = Self.group.next()
        let listener = try await TCPListener.listen(on: SocketAddress(.loopbackV4, port: 0), loop: loop)
        let address = try #require(await listener.localAddress)
        async let accepted = listener.accept(timeout: .seconds(5))
        let client = try await TCPConnection.connect(to: address, on: Self.group.next(), timeout: .seconds(5))
        let server = try await accepted
        await client.close(reset: true)
        // The reset has arrived (loopback delivers it within close). Two writes queued in one turn of the loop: the
        // first meets ECONNRESET, and libuv tries the second before the first's callback, which meets EPIPE.
        let line = Array("server -> client\n".utf8)
        async let first: Void = server.write(line, timeout: .seconds(5))
        async let second: Void = server.write(line, timeout: .seconds(5))
        let failed = [(try? await first) == nil, (try? await second) == nil].filter { $0 }.count
        #expect(failed > 0)
        await server.close()
        await listener.close()
    }

    @Test func readMissesItsDeadline() async throws {
        let loop = Self.group.next()
        let listener = try await TCPListener.listen(on: SocketAddress(.loopbackV4, port: 0), loop: loop)
        let address = try #require(await listener.localAddress)
        let client = try await TCPConnection.connect(to: address, on: loop, timeout: .seconds(5))
        let start = ContinuousClock.now
        await #expect(throws: UVError.timedOut) { try await client.read(timeout: .milliseconds(100)) }
        #expect(ContinuousClock.now - start >= .milliseconds(90))
        await client.close()
        await listener.close()
    }

    @Test func connectToAClosedPortIsRefused() async throws {
        let loop = Self.group.next()
        let listener = try await TCPListener.listen(on: SocketAddress(.loopbackV4, port: 0), loop: loop)
        let address = try #require(await listener.localAddress)
        await listener.close()
        await #expect(throws: UVError(-ECONNREFUSED)) {
            try await TCPConnection.connect(to: address, on: loop, timeout: .seconds(5))
        }
    }

    @Test func listeningOnAHeldPortIsAddressInUse() async throws {
        let loop = Self.group.next()
        let listener = try await TCPListener.listen(on: SocketAddress(.loopbackV4, port: 0), loop: loop)
        let address = try #require(await listener.localAddress)
        await #expect(throws: UVError.addressInUse) { try await TCPListener.listen(on: address, loop: loop) }
        await listener.close()
    }

    @Test func cancellingAnAcceptEndsItPromptly() async throws {
        let loop = Self.group.next()
        let listener = try await TCPListener.listen(on: SocketAddress(.loopbackV4, port: 0), loop: loop)
        let task = Task { try await listener.accept(timeout: .seconds(30)) }
        try await loop.sleep(for: .milliseconds(20))
        let start = ContinuousClock.now
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(ContinuousClock.now - start < .seconds(5))
        await listener.close()
    }

    @Test func sleepWaitsOnTheLoopTimer() async throws {
        let start = ContinuousClock.now
        try await Self.group.next().sleep(for: .milliseconds(50))
        #expect(ContinuousClock.now - start >= .milliseconds(45))
    }

    /// A shutdown that lands while a chain of closes is under way (one close callback closing the owner's next
    /// handle, as a sweep's shard does when its consumer leaves) lets the chain finish: nothing is counted as
    /// left open and no handle is closed twice (libuv aborts on that).
    @Test func aShutdownLetsClosesUnderWayFinish() throws {
        let loop = try EventLoop(name: "settle-test")
        let chainEnded = Flag()
        loop.execute {
            let first = LoopTimer(on: loop) {}, second = LoopTimer(on: loop) {}, third = IdleHook(on: loop) {}
            first.close {
                second.close { third.close { chainEnded.set() } }
            }
        }
        loop.shutdown()
        #expect(chainEnded.isSet)
        #expect(loop.handlesLeftOpen == 0)
    }

    final class Flag: Sendable {
        private let value = Atomic<Bool>(false)
        func set() { value.store(true, ordering: .releasing) }
        var isSet: Bool { value.load(ordering: .acquiring) }
    }

    @Test func addressesParseAndPrint() {
        #expect(IPAddress("999.1.1.1") == nil)
        #expect(IPAddress("1.2.3") == nil)
        #expect(IPAddress("::1")?.isLocalhost == true)
        #expect(IPAddress("127.8.9.1")?.isLocalhost == true)
        #expect(IPAddress("10.0.0.1")?.isLocalhost == false)
        #expect(IPAddress("localhost") == .loopbackV4)
        #expect(IPAddress("fe80::1")?.description == "fe80::1")
        #expect(SocketAddress(IPAddress("::1")!, port: 80).description == "[::1]:80")
    }
}
