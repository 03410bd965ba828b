import PortsweepHTTP
import Testing

@Suite struct HTTPFramingTests {
    @Test func pipelinedRequestsWithBodiesAndKeepAlive() throws {
        let framer = HTTPRequestFramer(collectHeaders: true)
        let bytes = Array((
            "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            + "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            + "HEAD /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").utf8)
        let heads = try framer.feed(bytes)
        #expect(heads.map(\.method) == ["GET", "POST", "HEAD"])
        #expect(heads.map(\.target) == ["/a", "/b", "/c"])
        #expect(heads.map(\.keepAlive) == [true, true, false])
        #expect(heads[1].headers.map(\.name) == ["Host", "Content-Length"])
        #expect(heads[2].isHead)
    }

    @Test func requestsSplitAcrossReads() throws {
        let framer = HTTPRequestFramer()
        let text = Array("GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".utf8)
        var heads: [HTTPRequestHead] = []
        for byte in text { heads += try framer.feed([byte]) }
        #expect(heads.count == 1)
        #expect(heads[0].versionMajor == 1 && heads[0].versionMinor == 0 && !heads[0].keepAlive)
    }

    @Test(arguments: ["GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", "GET / HTTP/9.9.9\r\n\r\n"])
    func malformedRequestsAreRefused(text: String) {
        #expect(throws: HTTPFramingError.self) { try HTTPRequestFramer().feed(Array(text.utf8)) }
    }
}
