import Foundation
import PortsweepHTTP
import Testing

/// The query decoder against Foundation's `removingPercentEncoding`, which serve used before (and whose answers
/// the original's clients saw): the same items for every target here, broken escapes and bad UTF-8 included.
@Suite struct RequestTargetTests {
    static func foundation(_ target: String) -> (String, [String: String]) {
        guard let mark = target.firstIndex(of: "?") else { return (target, [:]) }
        var items: [String: String] = [:]
        for pair in target[target.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map {
                String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0)
            }
            if items[parts[0]] == nil { items[parts[0]] = parts.count == 2 ? parts[1] : "" }
        }
        return (String(target[..<mark]), items)
    }

    @Test(arguments: [
        "/check_port?port=8080&protocol=tcp",
        "/check_port",
        "/check_port?",
        "/check_port?port=1&port=2",
        "/x?confirmation_data=hello+world%21&format=text",
        "/x?a=%E2%9C%93&b=%e2%9c%93",
        "/x?a=%FF&b=ok",
        "/x?a=%G1&b=%4&c=%",
        "/x?a+b=c+d&=empty&novalue&&x==y",
        "/x?a=100%25+sure",
        "/x?%70ort=1",
        "/x?a=%00",
        "/caf%C3%A9?q=caf%C3%A9",
    ])
    func decodesAsFoundationDid(target: String) {
        let parsed = RequestTarget(target)
        let expected = Self.foundation(target)
        #expect(parsed.path == expected.0)
        #expect(parsed.query == expected.1)
    }
}
