import Foundation
import Synchronization
import Testing
import UVLoop
import UVRedis

#if canImport(Glibc)
import Glibc
#endif

/// The client against a real redis-server: replies of every type, AUTH, and what a server that hangs, dies or
/// was never there does to a command (each bounded by the command's deadline, never a hang). Every loop is shut
/// down with no handle left open: hiredis's poll handle included.
@Suite(.enabled(if: RedisServer.available, "needs redis-server (apt-get install redis-server)"))
struct RedisClientTests {
    /// Runs `body` with a client of `server`'s (or of `port`, with no server) on a loop of its own, then closes
    /// it and checks the loop closed everything.
    static func withClient(port: Int, password: String? = nil, timeout: Duration = .milliseconds(250),
                           _ body: (RedisClient, Events) async throws -> Void) async throws {
        let loop = try EventLoop(name: "redis")
        var options = RedisClient.Options(host: .loopbackV4, port: port, password: password)
        options.commandTimeout = timeout
        options.reconnectDelay = .milliseconds(50)
        let events = Events()
        let client = RedisClient(options, on: loop) { up, why in events.list.withLock { $0.append("\(up ? "up" : "down"): \(why)") } }
        client.start()
        do { try await body(client, events) } catch { await client.close(); loop.shutdown(); throw error }
        await client.close()
        loop.shutdown()
        #expect(loop.handlesLeftOpen == 0)
    }

    /// Polls until the client is ready (at most 10 s): the connect happens on the loop, after start().
    static func ready(_ client: RedisClient, _ want: Bool = true) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while await client.isReady != want {
            guard ContinuousClock.now < deadline else { throw RedisError.unavailable("not \(want ? "ready" : "down") in 10 s") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    final class Events: Sendable {
        let list = Mutex<[String]>([])
    }

    @Test func repliesOfEveryType() async throws {
        let server = try RedisServer()
        try await Self.withClient(port: server.port) { client, events in
            try await Self.ready(client)
            #expect(try await client.command(["SET", "k", "a value\r\nwith CRLF and \u{0}"]) == .status("OK"))
            #expect(try await client.command(["GET", "k"]) == .string("a value\r\nwith CRLF and \u{0}"))
            #expect(try await client.command(["GET", "missing"]) == .null)
            #expect(try await client.command(["INCRBY", "n", "41"]) == .integer(41))
            #expect(try await client.command(["EVAL", "return {1, 'two', {3}}", "0"]) == .array([.integer(1), .string("two"), .array([.integer(3)])]))
            await #expect(throws: RedisError.self) { try await client.command(["NOSUCHCOMMAND"]) }
            // Many in flight at once: answered in order, each to its own caller.
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<500 {
                    group.addTask { try await client.command(["ECHO", "\(index)"]) == .string("\(index)") }
                }
                for try await matched in group { #expect(matched) }
            }
            #expect(events.list.withLock { $0 } == ["up: connected to 127.0.0.1:\(server.port)"])
        }
    }

    @Test func noServerFailsAtOnceAndKeepsTrying() async throws {
        let port = try RedisServer.freePort()
        // A long deadline: failing "at once" means well before it, however busy the machine.
        try await Self.withClient(port: port, timeout: .seconds(20)) { client, events in
            let start = ContinuousClock.now
            for _ in 0..<3 {
                do {
                    _ = try await client.command(["PING"])
                    Issue.record("a command to no server answered")
                } catch let error as RedisError {
                    if case .unavailable = error {} else { Issue.record("\(error)") }
                }
            }
            #expect(ContinuousClock.now - start < .seconds(10))
            // The server comes: the client finds it without being told.
            let server = try RedisServer(port: port)
            try await Self.ready(client)
            #expect(try await client.command(["PING"]) == .status("PONG"))
            server.stop()
            #expect(events.list.withLock { $0.first } == "up: connected to 127.0.0.1:\(port)")
        }
    }

    @Test func aHungServerIsADeadlineNotAHang() async throws {
        let server = try RedisServer()
        try await Self.withClient(port: server.port, timeout: .milliseconds(200)) { client, events in
            try await Self.ready(client)
            server.signal(SIGSTOP)
            let start = ContinuousClock.now
            await #expect(throws: RedisError.timedOut) { try await client.command(["PING"]) }
            let waited = ContinuousClock.now - start
            #expect(waited >= .milliseconds(190) && waited < .seconds(10), "\(waited)")
            // Dropped: the next command fails at once instead of queueing behind the stuck one.
            await #expect(throws: RedisError.self) { try await client.command(["PING"]) }
            server.signal(SIGCONT)
            try await Self.ready(client)
            #expect(try await client.command(["PING"]) == .status("PONG"))
            #expect(events.list.withLock { $0 }.contains { $0.hasPrefix("down: no reply within") })
        }
    }

    @Test func aServerThatDiesFailsWhatWaitsAndIsFoundAgain() async throws {
        let server = try RedisServer()
        try await Self.withClient(port: server.port) { client, events in
            try await Self.ready(client)
            server.stop()
            try await Self.ready(client, false)
            await #expect(throws: RedisError.self) { try await client.command(["PING"]) }
            try server.start()
            try await Self.ready(client)
            #expect(try await client.command(["PING"]) == .status("PONG"))
            let seen = events.list.withLock { $0 }
            #expect(seen.count == 3 && seen[1].hasPrefix("down: "), "\(seen)")
        }
    }

    @Test func authWithTheRightPasswordOnly() async throws {
        let server = try RedisServer(extra: ["--requirepass", "s3cret"])
        try await Self.withClient(port: server.port, password: "s3cret") { client, _ in
            try await Self.ready(client)
            #expect(try await client.command(["PING"]) == .status("PONG"))
        }
        try await Self.withClient(port: server.port, password: "wrong") { client, events in
            let deadline = ContinuousClock.now + .seconds(5)
            while events.list.withLock({ $0.isEmpty }), ContinuousClock.now < deadline {
                do { _ = try await client.command(["PING"]) } catch let error as RedisError {
                    if case .unavailable(let why) = error, why.hasPrefix("AUTH refused") { break }
                }
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(await client.isReady == false)
            #expect(events.list.withLock { $0 }.isEmpty)
        }
        // No password to a server that wants one: connected, and each command is refused by the server.
        try await Self.withClient(port: server.port) { client, _ in
            try await Self.ready(client)
            await #expect(throws: RedisError.self) { try await client.command(["GET", "k"]) }
        }
    }
}
