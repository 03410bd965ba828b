import Foundation
import Testing

extension EndToEnd {
/// `POST /sweep`'s switches and refusals, with curl on loopback (the whole path is in `ViaSweepTests`).
@Suite struct BulkEndpointTests {
    static let body = #"{"ports":"1-3","protocols":["tcp"],"timeout_ms":200,"token":"abcdefgh1234"}"#

    static func post(_ server: ServeProcess, _ body: String, _ headers: [String] = []) throws -> String {
        try Net.curl(["-w", "\n%{http_code}", "-X", "POST", "--data", body] + headers.flatMap { ["-H", $0] } + ["\(server.url)/sweep"])
    }

    @Test func aKeyIsRequiredWhenSetAndNoBulkTurnsTheEndpointOff() throws {
        let keyed = try ServeProcess(["--api-key", "s3cret-key"])
        #expect(keyed.ready())
        let missing = try Self.post(keyed, Self.body)
        #expect(missing.hasSuffix("\n401") && missing.contains("An API key is required"), "\(missing)")
        let wrong = try Self.post(keyed, Self.body, ["Authorization: Bearer other"])
        #expect(wrong.hasSuffix("\n401"), "\(wrong)")
        let right = try Self.post(keyed, Self.body, ["Authorization: Bearer s3cret-key"])
        #expect(right.hasSuffix("\n200") && right.contains(#"{"done":true,"probed":3}"#), "\(right)")
        let metrics = try Net.curl(["\(keyed.url)/metrics"])
        #expect(metrics.contains(#"portsweep_bulk_refused_total{reason="api_key"} 2"#), "\(metrics)")
        #expect(keyed.stop() == 0)

        let off = try ServeProcess(["--no-bulk"])
        #expect(off.ready())
        #expect(try Self.post(off, Self.body).hasSuffix("\n404"))
        #expect(off.stop() == 0)
    }

    @Test func badBodiesAreFourHundredsThatSayWhatIsWrong() throws {
        let server = try ServeProcess()
        #expect(server.ready())
        for (body, words) in [
            ("", "A JSON body is required"),
            ("{", "The body is not a sweep request"),
            (#"{"ports":"0-3","protocols":["tcp"],"timeout_ms":200,"token":"abcdefgh1234"}"#, "Bad ports"),
            (#"{"ports":"1-3","protocols":["sctp"],"timeout_ms":200,"token":"abcdefgh1234"}"#, "Unsupported protocol"),
            (#"{"ports":"1-3","protocols":["tcp"],"timeout_ms":99999,"token":"abcdefgh1234"}"#, "timeout_ms must be"),
            (#"{"ports":"1-3","protocols":["tcp"],"timeout_ms":200,"token":"a b\nc"}"#, "The token must be"),
        ] {
            let answer = try Self.post(server, body)
            #expect(answer.hasSuffix("\n400") && answer.contains(words), "\(body): \(answer)")
        }
        // More than the whole hourly budget in one request: 413, split it.
        let huge = #"{"ports":"1-65535","protocols":["tcp","udp"],"timeout_ms":200,"token":"abcdefgh1234"}"#
        let limited = try ServeProcess(["--bulk-tests-per-hour", "1000"])
        #expect(limited.ready())
        let answer = try Self.post(limited, huge)
        #expect(answer.hasSuffix("\n413") && answer.contains("at most 1000 port tests"), "\(answer)")
        #expect(server.stop() == 0 && limited.stop() == 0)
    }
}
}
