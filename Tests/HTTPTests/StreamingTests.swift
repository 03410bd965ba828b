import Foundation
import HTTPTypes
import PortsweepHTTP
import Synchronization
import Testing
import UVLoop

/// Streamed responses of the one HTTP server (chunked JSON Lines, Server-Sent Events), in this process on
/// port 0, read by a real TCP client.
@Suite(.timeLimit(.minutes(1))) struct StreamingTests {
    /// Reads until `done` says the bytes so far are enough, or the peer closes.
    static func read(_ client: TCPConnection, until done: (String) -> Bool) async throws -> String {
        var bytes: [UInt8] = []
        while !done(String(decoding: bytes, as: UTF8.self)) {
            let chunk = try await client.read(timeout: .seconds(10))
            if chunk.isEmpty { break }
            bytes += chunk
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The body of a chunked response, decoded; nil when the framing is wrong.
    static func dechunk(_ body: Substring) -> String? {
        var rest = Array(body.utf8)[...]
        var out: [UInt8] = []
        let crlf: [UInt8] = [13, 10]
        while true {
            guard let end = rest.indices.first(where: { rest[$0...].starts(with: crlf) }),
                  let size = Int(String(decoding: rest[..<end], as: UTF8.self), radix: 16) else { return nil }
            rest = rest[(end + 2)...]
            if size == 0 { return rest.starts(with: crlf) ? String(decoding: out, as: UTF8.self) : nil }
            guard rest.count >= size + 2, rest.dropFirst(size).starts(with: crlf) else { return nil }
            out += rest.prefix(size)
            rest = rest.dropFirst(size + 2)
        }
    }

    static func server(on loop: EventLoop, _ handler: @escaping HTTPConnectionHandler.Handler) async throws -> HTTPServer {
        try await HTTPServer(on: SocketAddress(.loopbackV4, port: 0), loop: loop, limits: ConnectionLimits(), handler: handler)
    }

    @Test func jsonLinesGoOutChunkedAndTheConnectionServesTheNextRequest() async throws {
        let group = try EventLoopGroup(loopCount: 1)
        let server = try await Self.server(on: group.loops[0]) { request in
            guard request.head.path == "/lines" else { return ServerResponse(status: .ok, body: Array("plain\n".utf8)) }
            return .jsonLines(AsyncStream { continuation in
                Task {
                    for i in 1...3 {
                        continuation.yield(Array("{\"n\":\(i)}".utf8))
                        try? await Task.sleep(for: .milliseconds(20))
                    }
                    continuation.finish()
                }
            })
        }
        let client = try await TCPConnection.connect(to: server.localAddress, on: group.loops[0], timeout: .seconds(5))
        // Two pipelined requests: the second is answered after the stream ends, on the same connection.
        try await client.write(Array("GET /lines HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n".utf8),
                               timeout: .seconds(5))
        let text = try await Self.read(client) { $0.hasSuffix("plain\n") }
        let parts = text.components(separatedBy: "\r\n\r\n")
        #expect(parts[0].hasPrefix("HTTP/1.1 200 OK") && parts[0].contains("Transfer-Encoding: chunked"), "\(text)")
        #expect(parts[0].contains("Content-Type: application/x-ndjson") && !parts[0].contains("Content-Length"))
        let streamed = text[text.range(of: "\r\n\r\n")!.upperBound...]
        let body = Self.dechunk(streamed[..<(streamed.range(of: "HTTP/1.1 200 OK")?.lowerBound ?? streamed.endIndex)])
        #expect(body == "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n", "\(text)")
        #expect(text.hasSuffix("Content-Length: 6\r\nConnection: keep-alive\r\n\r\nplain\n"), "\(text)")
        await client.close()
        await server.stop()
        group.shutdown()
        #expect(group.loops[0].handlesLeftOpen == 0)
    }

    /// HTTP/1.0 knows no chunked coding: its stream is the bytes themselves, ended by the close.
    @Test func anHTTP10ClientGetsTheStreamUnchunkedEndedByTheClose() async throws {
        let group = try EventLoopGroup(loopCount: 1)
        let server = try await Self.server(on: group.loops[0]) { _ in
            .jsonLines(AsyncStream { continuation in
                for i in 1...3 { continuation.yield(Array("{\"n\":\(i)}".utf8)) }
                continuation.finish()
            })
        }
        let client = try await TCPConnection.connect(to: server.localAddress, on: group.loops[0], timeout: .seconds(5))
        try await client.write(Array("GET /lines HTTP/1.0\r\n\r\n".utf8), timeout: .seconds(5))
        let text = try await Self.read(client) { _ in false }  // until the server closes
        let parts = text.components(separatedBy: "\r\n\r\n")
        #expect(parts[0].hasPrefix("HTTP/1.1 200 OK") && parts[0].contains("Connection: close"), "\(text)")
        #expect(!parts[0].contains("Transfer-Encoding") && !parts[0].contains("Content-Length"), "\(text)")
        #expect(parts.dropFirst().joined(separator: "\r\n\r\n") == "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n", "\(text)")
        await client.close()
        await server.stop()
        group.shutdown()
        #expect(group.loops[0].handlesLeftOpen == 0)
    }

    @Test func serverSentEventsAreFramedAndAClientThatLeavesStopsTheProducer() async throws {
        #expect(ServerSentEvent(event: "port", id: "7", data: "a\nb").bytes == Array("event: port\nid: 7\ndata: a\ndata: b\n\n".utf8))
        #expect(ServerSentEvent(event: "x\ny", data: "").bytes == Array("event: xy\ndata: \n\n".utf8))

        let group = try EventLoopGroup(loopCount: 1)
        let (stopped, stoppedContinuation) = AsyncStream<Void>.makeStream()
        let server = try await Self.server(on: group.loops[0]) { _ in
            .serverSentEvents(AsyncStream { continuation in
                continuation.onTermination = { _ in stoppedContinuation.yield() }
                continuation.yield(ServerSentEvent(event: "hello", data: "1"))  // then never another, never the end
            })
        }
        let client = try await TCPConnection.connect(to: server.localAddress, on: group.loops[0], timeout: .seconds(5))
        try await client.write(Array("GET /events HTTP/1.1\r\nHost: x\r\n\r\n".utf8), timeout: .seconds(5))
        let text = try await Self.read(client) { $0.contains("data: 1\n\n") }
        #expect(text.contains("Content-Type: text/event-stream") && text.contains("event: hello\ndata: 1\n\n"), "\(text)")
        await client.close()
        var iterator = stopped.makeAsyncIterator()
        await iterator.next()  // the producer hears that nobody listens any more (the suite's time limit bounds it)
        await server.stop()
        group.shutdown()
        #expect(group.loops[0].handlesLeftOpen == 0)
    }

    @Test func aDrainEndsAnEndlessStreamWhole() async throws {
        let group = try EventLoopGroup(loopCount: 1)
        let server = try await Self.server(on: group.loops[0]) { _ in
            .serverSentEvents(AsyncStream { continuation in continuation.yield(ServerSentEvent(data: "tick")) })
        }
        let client = try await TCPConnection.connect(to: server.localAddress, on: group.loops[0], timeout: .seconds(5))
        try await client.write(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), timeout: .seconds(5))
        _ = try await Self.read(client) { $0.contains("data: tick\n\n") }
        let started = ContinuousClock.now
        await server.drain(within: .seconds(20))
        // Well under the 20 s the drain allows (a loaded full run has delayed it by 6 s).
        #expect(ContinuousClock.now - started < .seconds(12), "the drain waited for a stream that never ends")
        let rest = try await Self.read(client) { _ in false }
        #expect(rest.hasSuffix("0\r\n\r\n"), "the stream ends with its last chunk: \(rest.debugDescription)")
        await client.close()
        await server.stop()
        group.shutdown()
        #expect(group.loops[0].handlesLeftOpen == 0)
    }

    @Test func aReaderThatFallsBehindIsCutNotBuffered() async throws {
        let group = try EventLoopGroup(loopCount: 1)
        let (stopped, stoppedContinuation) = AsyncStream<Int>.makeStream()
        let server = try await Self.server(on: group.loops[0]) { _ in
            // As fast as the server takes them, forever: 1 KiB lines.
            .jsonLines(AsyncStream(unfolding: { [UInt8](repeating: UInt8(ascii: "x"), count: 1024) },
                                   onCancel: { stoppedContinuation.yield(1) }))
        }
        let client = try await TCPConnection.connect(to: server.localAddress, on: group.loops[0], timeout: .seconds(5))
        try await client.write(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), timeout: .seconds(5))
        // The client reads nothing: once the kernel's buffers are full, 64 KiB queued more and it is cut.
        var iterator = stopped.makeAsyncIterator()
        _ = await iterator.next()
        await client.close()
        await server.stop()
        group.shutdown()
        #expect(group.loops[0].handlesLeftOpen == 0)
    }

    /// A shard its owner drops without `stop()` (a test that threw half-way, a start that failed) must cost its
    /// timer's ticks, not a crash: its deadline timer reached it through an `unowned` reference, which trapped on
    /// the first tick after the shard was gone ("Attempted to read an unowned reference").
    @Test func aShardDroppedWithoutStopIsNoCrash() async throws {
        let group = try EventLoopGroup(loopCount: 1)
        let loop = group.loops[0]
        var short = ConnectionLimits()
        short.requestTimeout = .milliseconds(200)  // the shard's timer ticks every 50 ms
        let limits = short
        await loop.run {
            _ = ConnectionShard(loop: loop, limits: limits, budget: ConnectionBudget(limit: 10)) { _ in SilentHandler() }
        }
        // Six of the shard's ticks, counted by the loop's own clock.
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            loop.execute {
                nonisolated(unsafe) var timer: LoopTimer?
                timer = LoopTimer(on: loop) {
                    timer?.close()
                    timer = nil
                    done.resume()
                }
                timer?.start(after: .milliseconds(300))
            }
        }
        group.shutdown()
    }
}
