import Foundation
import HTTPTypes
@testable import PortsweepDashboard
import PortsweepHTTP
import PortsweepListen
import UVLoop
import PortsweepEngine
import Testing

@Suite struct DashboardAccessTests {
    let access = DashboardAccess(port: 9900, token: "0123456789abcdef0123456789abcdef")

    func request(_ path: String, method: HTTPRequest.Method = .get, cookie: String? = nil) -> HTTPRequest {
        var request = HTTPRequest(method: method, scheme: nil, authority: "127.0.0.1:9900", path: path)
        if let cookie { request.headerFields[.cookie] = cookie }
        return request
    }

    @Test func theTokenIsTradedForACookieAndEitherLetsIn() {
        #expect(access.decide(request("/?token=0123456789abcdef0123456789abcdef")) == .setCookie(location: "/"))
        #expect(access.decide(request("/events?token=0123456789abcdef0123456789abcdef")) == .setCookie(location: "/events"))
        #expect(access.decide(request("//evil.example/?token=0123456789abcdef0123456789abcdef")) == .setCookie(location: "/"),
                "no redirect to another host")
        #expect(access.decide(request("/\\evil.example?token=0123456789abcdef0123456789abcdef")) == .setCookie(location: "/"))
        #expect(access.decide(request("/events", cookie: "a=b; portsweep-dashboard-9900=0123456789abcdef0123456789abcdef")) == .allow)
        let set = access.response(for: .setCookie(location: "/"))
        #expect(set.head.status == .seeOther)
        #expect(set.head.headerFields[.setCookie] == "portsweep-dashboard-9900=0123456789abcdef0123456789abcdef; Path=/; HttpOnly; SameSite=Strict")
    }

    @Test func anythingElseIsRefused() {
        #expect(access.decide(request("/")) == .refuse)
        #expect(access.decide(request("/?token=0123456789abcdef0123456789abcdee")) == .refuse)
        #expect(access.decide(request("/?token=")) == .refuse)
        #expect(access.decide(request("/", cookie: "portsweep-dashboard-9901=0123456789abcdef0123456789abcdef")) == .refuse,
                "another port's dashboard's cookie")
        #expect(access.decide(request("/", cookie: "portsweep-dashboard-9900=0123456789abcdef")) == .refuse)
        #expect(access.response(for: .refuse).head.status == .forbidden)
    }

    @Test func tokensAreRandomAnd128Bits() {
        let a = DashboardAccess(port: 1), b = DashboardAccess(port: 1)
        #expect(a.token.count == 32 && a.token.allSatisfy(\.isHexDigit) && a.token != b.token)
    }
}

@Suite struct SweepBoardTests {
    static func decode(_ json: [UInt8]) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(json)) as? [String: Any])
    }

    @Test func aPageIsSentWhatItHasNotSeenAsRunsWhateverTheOrderOfVerdicts() throws {
        let board = SweepBoard(title: "t", transports: [.tcp, .udp]) {
            SweepProgress(completed: 5, total: 20, protocols: 2, deadlineLeft: 0)
        }
        board.begin()
        // Out of order, as loops decide them: port 3 before 1 and 2.
        board.add([PortResult(port: 3, transport: .tcp, outcome: .fail, errno: 110),
                   PortResult(port: 1, transport: .tcp, outcome: .pass), PortResult(port: 1, transport: .udp, outcome: .pass)])
        board.add([PortResult(port: 2, transport: .tcp, outcome: .pass)])
        let (first, cursor) = board.update(since: 0)
        let decoded = try Self.decode(first)
        #expect(decoded["groups"] as? [[String]] == [["TCP", "1", "2", "PASS", ""], ["TCP", "3", "3", "FAIL", "ETIMEDOUT"],
                                                      ["UDP", "1", "1", "PASS", ""]], "\(decoded)")
        #expect(decoded["done"] as? Int == 2 && decoded["total"] as? Int == 10 && decoded["phase"] as? String == "running")
        board.add([PortResult(port: 4, transport: .tcp, outcome: .fail, errno: 110)])
        let next = try Self.decode(board.update(since: cursor).json)
        #expect(next["groups"] as? [[String]] == [["TCP", "4", "4", "FAIL", "ETIMEDOUT"]], "only what is new")
        // A page that (re)connects gets everything, merged.
        let again = try Self.decode(board.update(since: 0).json)
        #expect(again["groups"] as? [[String]] == [["TCP", "1", "2", "PASS", ""], ["TCP", "3", "4", "FAIL", "ETIMEDOUT"],
                                                    ["UDP", "1", "1", "PASS", ""]])
        board.finish(.done, summary: "s", exitStatus: 1)
        let done = try Self.decode(board.update(since: cursor).json)
        #expect(done["phase"] as? String == "done" && done["exitStatus"] as? Int == 1 && done["eta"] == nil)
        #expect(board.results.map { "\($0.transport.rawValue) \($0.port) \($0.outcome)" } == ["TCP 1 PASS", "UDP 1 PASS", "TCP 2 PASS", "TCP 3 FAIL", "TCP 4 FAIL"])
    }
}

@Suite struct ListenBoardTests {
    static func connection(_ port: UInt16, _ n: Int) -> ListenEvent {
        .connection(ConnectionRecord(localPort: port, client: SocketAddress(.loopbackV4, port: UInt16(1024 + n % 60000)),
                                     bytesIn: 10, bytesOut: 20, requests: 1, duration: .milliseconds(1), end: "served"))
    }

    /// Whatever comes (here 100,000 connections on 5,000 ports), the board keeps `tail` lines and one entry per
    /// recent port, and a page is sent at most `linesPerUpdate` lines an update, told how many it missed.
    @Test func memoryAndUpdatesStayBoundedUnderLoad() throws {
        let board = ListenBoard()
        for n in 0..<100_000 { board.record(Self.connection(UInt16(1 + n % 5000), n)) }
        let (json, cursor) = board.update(since: 0)
        let update = try SweepBoardTests.decode(json)
        #expect((update["lines"] as? [Any])?.count == ListenBoard.linesPerUpdate)
        #expect(update["skipped"] as? Int == 100_000 - ListenBoard.linesPerUpdate)
        #expect(update["connections"] as? Int == 100_000 && cursor == 100_000)
        #expect((update["busiest"] as? [[String]])?.count == 10)
        // 5,000 hot ports as one run, not 5,000 entries.
        #expect((update["grid"] as? [[String]]) == [["TCP", "1", "5000", "hit recently", ""]])
        #expect(json.count < 64 * 1024, "\(json.count) bytes")
        board.record(Self.connection(7, 1))
        let next = try SweepBoardTests.decode(board.update(since: cursor).json)
        #expect((next["lines"] as? [Any])?.count == 1 && next["skipped"] as? Int == 0)
    }
}
