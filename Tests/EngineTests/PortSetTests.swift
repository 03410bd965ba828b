import PortsweepEngine
import Testing

@Suite struct PortSetTests {
    @Test func parsesRangesListsAndDash() throws {
        #expect(try PortSet(parsing: "8080").sorted == [8080])
        #expect(try PortSet(parsing: "1-3").sorted == [1, 2, 3])
        #expect(try PortSet(parsing: "22,80,8000-8002").sorted == [22, 80, 8000, 8001, 8002])
        #expect(try PortSet(parsing: "-").count == 65535)
        #expect(try PortSet(parsing: "5,3,5,4-6").sorted == [3, 4, 5, 6])
        #expect(try PortSet(parsing: "65535").sorted == [65535])
    }

    @Test(arguments: [
        ("0", "port 0 is outside 1-65535"),
        ("70000", "port 70000 is outside 1-65535"),
        ("10-5", "range 10-5 runs backwards (10 > 5)"),
        ("abc", "'abc' is not a port number"),
        ("", "it is empty"),
        ("1,,2", "empty item in the list"),
        ("-5", "'' is not a port number"),
        ("1-2-3", "'2-3' is not a port number"),
        ("999999999999999999999", "port 999999999999999999999 is outside 1-65535"),
    ])
    func rejectsBadSpecsNamingTheValue(spec: String, reason: String) {
        #expect(throws: PortSpecError(spec: spec, reason: reason)) { try PortSet(parsing: spec) }
    }

    @Test func describesRuns() throws {
        #expect(try PortSet(parsing: "22,80,8000-8100,8102").description == "22,80,8000-8100,8102")
    }

    @Test func outcomeWordsAndBits() {
        #expect(Outcome.pass.word == "PASS")
        #expect(Outcome.fail.rawValue == 1 && Outcome.send.rawValue == 2 && Outcome.sudo.rawValue == 4)
        #expect(Outcome.used.rawValue == 8 && Outcome.recv.rawValue == 16 && Outcome.erro.rawValue == 64)
        #expect(Outcome([.send, .recv]).word == "SEND+RECV")
        #expect(Outcome(word: "send+recv") == [.send, .recv])
        #expect(Outcome(word: "NOPE") == nil)
    }
}
