import Foundation
public import HTTPTypes
public import PortsweepHTTP

/// Who may see a dashboard: whoever holds its token. The URL printed at start carries the token once; the first
/// request with it is answered with a redirect that trades it for an HttpOnly, SameSite=Strict cookie (so the
/// token leaves the address bar and the history, and no script can read it); every later request needs the
/// cookie or the token. A page on another origin gets neither: the browser sends a SameSite=Strict cookie only
/// to pages of this origin, and the token is in no URL that page can learn.
///
/// Cookies are not scoped by port, so the cookie's name carries it: two dashboards on one host (a sweep and a
/// listen) keep their own.
public struct DashboardAccess: Sendable {
    public let token: String
    public let cookieName: String

    /// A random 128-bit token (the system generator: getrandom(2) on Linux).
    public init(port: UInt16, token: String? = nil) {
        var generator = SystemRandomNumberGenerator()
        self.token = token ?? (0..<2).map { _ in
            let word = generator.next() as UInt64
            let hex = String(word, radix: 16)
            return String(repeating: "0", count: 16 - hex.count) + hex
        }.joined()
        cookieName = "portsweep-dashboard-\(port)"
    }

    /// What to do with a request: serve it, trade the token for the cookie, or refuse it.
    public enum Decision: Equatable, Sendable {
        case allow
        /// The token was in the query: redirect to the same path without it, setting the cookie.
        case setCookie(location: String)
        case refuse
    }

    public func decide(_ request: HTTPRequest) -> Decision {
        let path = request.path ?? "/"
        let (bare, query) = Self.split(path)
        if let offered = Self.queryValue("token", in: query) {
            guard Self.same(offered, token) else { return .refuse }
            // Back to the same page without the token; never to another host (`//host` is one to a browser).
            let location = bare.hasPrefix("/") && !bare.hasPrefix("//") && !bare.contains("\\") ? bare : "/"
            return request.method == .get || request.method == .head ? .setCookie(location: location) : .allow
        }
        for value in request.headerFields[values: .cookie] {
            for pair in value.split(separator: ";") {
                let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if parts.count == 2, parts[0] == cookieName, Self.same(parts[1], token) { return .allow }
            }
        }
        return .refuse
    }

    /// The answer for a decision other than `.allow`.
    public func response(for decision: Decision) -> ServerResponse {
        switch decision {
        case .allow:
            return ServerResponse(status: .ok, body: [])
        case .setCookie(let location):
            var headers = DashboardAccess.pageHeaders
            headers[.location] = location
            headers[.setCookie] = "\(cookieName)=\(token); Path=/; HttpOnly; SameSite=Strict"
            return ServerResponse(status: .seeOther, headers: headers, body: [])
        case .refuse:
            var headers = DashboardAccess.pageHeaders
            headers[.contentType] = "text/plain; charset=utf-8"
            return ServerResponse(status: .forbidden, headers: headers,
                                  body: Array("This dashboard needs its token: open the URL portsweep printed when it started.\n".utf8))
        }
    }

    /// On every dashboard answer: nothing cached, no referrer (a token must not travel on), no framing by another
    /// site, no sniffing; pages load nothing but their own inline parts and same-origin requests.
    public static let pageHeaders: HTTPFields = [
        .cacheControl: "no-store",
        HTTPField.Name("Referrer-Policy")!: "no-referrer",
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        HTTPField.Name("Content-Security-Policy")!:
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ]

    static func split(_ target: String) -> (path: String, query: Substring) {
        guard let mark = target.firstIndex(of: "?") else { return (target, "") }
        return (String(target[..<mark]), target[target.index(after: mark)...])
    }

    static func queryValue(_ name: String, in query: Substring) -> String? {
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.first == Substring(name) { return parts.count == 2 ? String(parts[1]) : "" }
        }
        return nil
    }

    /// Compares without an early exit, so the time taken says nothing about how much of a guess was right.
    static func same(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for i in 0..<x.count { difference |= x[i] ^ y[i] }
        return difference == 0
    }
}
