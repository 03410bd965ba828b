import Foundation
import HTTPTypes
public import PortsweepHTTP
public import Logging
import Metrics
import PortsweepEngine
import Synchronization
public import UVLoop

public struct CheckConfiguration: Sendable {
    public var probeTimeout: Duration = .seconds(3)
    /// nil: no limit.
    public var rateLimit: RateLimit? = .original
    /// Clients the rate limiter remembers at most (the oldest are forgotten first).
    public var rateLimitClients: Int = 100_000
    /// Which addresses share a budget (IPv6: a /64 by default).
    public var clientGrouping = ClientGrouping()
    /// Peers whose `X-Forwarded-For` is believed.
    public var trustedProxies: [CIDR] = []
    /// Probes in flight at most; more get 503.
    public var maxProbes: Int = 10_000
    /// `POST /sweep`, many ports in one request; nil: no such route (`--no-bulk`).
    public var bulk: BulkLimits? = BulkLimits()
    /// Where the budgets live: nil, this process; a store, Redis shared with other instances (this process's
    /// limiter deciding while Redis cannot).
    public var sharedStore: SharedBudgetStore?

    public init() {}
}

/// The port-checker API: `GET /check_port?port=&protocol=&confirmation_data=&format=` probes the caller's own
/// address and answers in the original service's words and shapes; `POST /sweep` probes many (`BulkSweep`);
/// `GET /healthz`.
public final class CheckService: Sendable {
    public let configuration: CheckConfiguration
    private let group: EventLoopGroup
    private let limiter: RateLimiter?
    private let probes = Mutex(0)
    private let accessLog: Logger?
    private let metrics = ServeMetrics()
    private let metricsText: (@Sendable () -> [UInt8])?
    private let bulk: BulkSweep?
    private let shared: SharedBudgets?

    /// `accessLog`: a line per request (time, client, port, protocol, status, duration). `metricsText`: the body
    /// of `GET /metrics` (Prometheus text), or nil for no such route.
    public init(_ configuration: CheckConfiguration, group: EventLoopGroup, accessLog: Logger? = nil,
                metricsText: (@Sendable () -> [UInt8])? = nil) {
        self.configuration = configuration
        self.group = group
        self.accessLog = accessLog
        self.metricsText = metricsText
        shared = configuration.sharedStore.map { SharedBudgets($0, on: group.loops[0], logger: Logger(label: "portsweep.serve")) }
        bulk = configuration.bulk.map { [shared] in
            BulkSweep($0, group: group, grouping: configuration.clientGrouping, clients: configuration.rateLimitClients,
                      shared: shared)
        }
        limiter = configuration.rateLimit.map {
            RateLimiter($0, grouping: configuration.clientGrouping, capacity: configuration.rateLimitClients)
        }
    }

    /// Whether the shared store decides now (false without one): for a caller that must wait for it.
    public var sharedStoreReady: Bool {
        get async { await shared?.isReady ?? false }
    }

    /// Closes the store's connection (its handle is on the group's first loop): before the group shuts down.
    public func shutdown() async {
        await shared?.close()
    }

    public func handle(_ request: ServerRequest) async -> ServerResponse {
        let start = ContinuousClock.now
        var record = AccessRecord()
        let target = RequestTarget(request.head.path ?? "/")
        let response = await route(request, target: target, record: &record)
        metrics.requests(status: response.head.status.code).increment()
        if let accessLog {
            let client = record.client.map { "\($0)" } ?? request.peer.map { "\($0.ip)" } ?? "-"
            var metadata: Logger.Metadata = [
                "client": "\(client)", "method": "\(request.head.method.rawValue)",
                "path": "\(target.path)",
                "status": "\(response.head.status.code)",
                "duration_ms": "\(Self.milliseconds(ContinuousClock.now - start))",
            ]
            if let peer = request.peer, record.client != nil, record.client != peer.ip { metadata["peer"] = "\(peer.ip)" }
            if let port = record.port { metadata["port"] = "\(port)" }
            if let proto = record.protocol { metadata["protocol"] = "\(proto)" }
            if let result = record.result { metadata["result"] = "\(result)" }
            accessLog.info("request", metadata: metadata)
        }
        return response
    }

    /// What the access log says of a request beyond its head.
    struct AccessRecord {
        var client: IPAddress?
        var port: Int?
        var `protocol`: String?
        var result: String?
    }

    static func milliseconds(_ d: Duration) -> String {
        // Tenths of a millisecond, rounded; by hand: String(format:) costs a microsecond or two per request.
        let (seconds, atto) = d.components
        let tenths = max(0, Int((Double(seconds) * 10_000 + Double(atto) / 1e14).rounded()))
        return "\(tenths / 10).\(tenths % 10)"
    }

    private func route(_ request: ServerRequest, target: RequestTarget, record: inout AccessRecord) async -> ServerResponse {
        let query = target.query
        switch (request.head.method, target.path) {
        case (.get, "/"), (.head, "/"):
            let client = client(of: request)
            let budget: FrontPage.Budget? = if case .success(let ip) = client { await budget(for: ip) } else { nil }
            return FrontPage.response(client: client, budget: { _ in budget })
        case (.get, "/healthz"), (.head, "/healthz"):
            return ServerResponse(status: .ok, headers: [.contentType: "text/plain"], body: Array("ok\n".utf8))
        case (.get, "/check_port"), (.head, "/check_port"):
            return await check(query: query, request: request, record: &record)
        case (.post, "/sweep") where bulk != nil:
            return await bulk!.handle(request, client: client(of: request), record: &record)
        case (_, "/sweep") where bulk != nil:
            return Answer.error("Method not allowed: POST a sweep request", status: .methodNotAllowed, text: false)
        case (.get, "/metrics") where metricsText != nil, (.head, "/metrics") where metricsText != nil:
            return ServerResponse(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: metricsText!())
        case (_, "/check_port"), (_, "/healthz"):
            return Answer.error("Method not allowed", status: .methodNotAllowed, text: false)
        case (_, "/metrics") where metricsText != nil:
            return Answer.error("Method not allowed", status: .methodNotAllowed, text: false)
        default:
            return Answer.error("Not found", status: .notFound, text: false)
        }
    }

    /// What the rate limit leaves `ip`: nil when there is no limit.
    func budget(for ip: IPAddress) async -> FrontPage.Budget? {
        guard let limiter else { return nil }
        let shared = await shared?.remaining(ip, limit: limiter.rule, grouping: configuration.clientGrouping)
        return FrontPage.Budget(left: shared ?? limiter.remaining(ip), rule: limiter.rule)
    }

    /// A check counted against `ip`'s budget: in the shared store, or (without one, or while it cannot decide)
    /// in this process's limiter.
    private func admit(_ ip: IPAddress, _ limiter: RateLimiter) async -> SharedBudgets.Admission {
        if let shared, let admission = await shared.admit(ip, limit: limiter.rule, grouping: configuration.clientGrouping) {
            return admission
        }
        if let wait = limiter.admit(ip) { return SharedBudgets.Admission(wait: wait, remaining: 0, ticket: nil) }
        return SharedBudgets.Admission(wait: nil, remaining: limiter.remaining(ip), ticket: nil)
    }

    /// Takes back a check the server failed to make, where it was counted.
    private func refund(_ ip: IPAddress, _ admission: SharedBudgets.Admission) async {
        if let ticket = admission.ticket, let shared {
            await shared.refund(ip, ticket: ticket, grouping: configuration.clientGrouping)
        } else {
            limiter?.refund(ip)
        }
    }

    /// `RateLimit-Limit` / `RateLimit-Remaining` (the IETF httpapi draft's names) on every answer to a check that
    /// knows its caller: scripts and the front page see what is left without spending a check.
    private func budgetHeaders(remaining: Int) -> HTTPFields {
        guard let limiter else { return [:] }
        var fields = HTTPFields()
        fields[HTTPField.Name("RateLimit-Limit")!] = "\(limiter.rule.count)"
        fields[HTTPField.Name("RateLimit-Policy")!] = "\(limiter.rule.count);w=\(limiter.rule.window.components.seconds)"
        fields[HTTPField.Name("RateLimit-Remaining")!] = "\(remaining)"
        return fields
    }

    /// The address a check probes: the caller's own (see `ClientAddress`).
    func client(of request: ServerRequest) -> Result<IPAddress, ClientAddress.Refusal> {
        let forwarded = request.head.headerFields[values: HTTPField.Name("X-Forwarded-For")!]
        return ClientAddress.resolve(peer: request.peer?.ip, forwardedFor: forwarded,
                                     trusted: configuration.trustedProxies)
    }

    private func check(query: [String: String], request: ServerRequest, record: inout AccessRecord) async -> ServerResponse {
        let format = query["format"]?.lowercased() ?? "json"
        guard format == "json" || format == "text" else {
            return Answer.error("Unsupported format: use json or text", status: .badRequest, text: false)
        }
        let text = format == "text"
        guard let portText = query["port"], !portText.isEmpty, let protocolText = query["protocol"], !protocolText.isEmpty else {
            return Answer.error("Port number and protocol are required", status: .badRequest, text: text)
        }
        guard let port = Int(portText), (1...65535).contains(port) else {
            return Answer.error("Port must be an integer from 1 to 65535", status: .badRequest, text: text)
        }
        let proto = protocolText.lowercased()
        guard proto == "tcp" || proto == "udp" else {
            return Answer.error("Unsupported protocol", status: .badRequest, text: text)
        }
        record.port = port
        record.protocol = proto
        let confirmation = query["confirmation_data"]
        // 20 bytes on the wire, not 20 characters: one emoji can be 25 bytes.
        if let confirmation, confirmation.utf8.count > 20 {
            return Answer.error("Confirmation data too long. Maximum length is 20 characters.", status: .badRequest, text: text)
        }
        let ip: IPAddress
        switch client(of: request) {
        case .success(let address): ip = address
        case .failure(let refusal):
            Counter(label: "portsweep_client_address_refused_total").increment()
            return Answer.error(refusal.description, status: .badRequest, text: text)
        }
        record.client = ip
        var admission = SharedBudgets.Admission(wait: nil, remaining: 0, ticket: nil)
        if let limiter {
            admission = await admit(ip, limiter)
            if let wait = admission.wait {
                Counter(label: "portsweep_rate_limited_total").increment()
                return Answer.tooMany(wait: wait, text: text, extraHeaders: budgetHeaders(remaining: 0))
            }
        }
        let inFlight = probes.withLock { count -> Int? in
            guard count < configuration.maxProbes else { return nil }
            count += 1
            return count
        }
        guard let inFlight else {
            await refund(ip, admission)
            return Answer.error("Too many checks in progress", status: .serviceUnavailable, text: text)
        }
        metrics.probesInFlight.record(inFlight)
        defer { metrics.probesInFlight.record(probes.withLock { count in count -= 1; return count }) }
        let target = SocketAddress(ip, port: UInt16(port))
        let loop = group.next()
        let probed = proto == "tcp"
            ? await Probe.tcp(target, confirmation: confirmation, timeout: configuration.probeTimeout, on: loop)
            : await Probe.udp(target, confirmation: confirmation, timeout: configuration.probeTimeout, on: loop)
        let outcome: Probe.Outcome
        switch probed {
        case .success(let answered):
            outcome = answered
        case .failure(let error):
            // Our trouble, not the caller's port: say so, and do not count it against the caller's limit.
            await refund(ip, admission)
            Counter(label: "portsweep_probe_local_errors_total", dimensions: [("error", error.name)]).increment()
            return Answer.error("The server could not probe your port (\(error.name) on the server); try again later",
                                status: .serviceUnavailable, text: text, extraHeaders: [.retryAfter: "5"])
        }
        metrics.checks(protocol: proto, status: outcome.status).increment()
        record.result = outcome.status
        var fields: [(String, String?)] = [("you_ip", "\(ip)"), ("scan_port", "\(port)"), ("scan_protocol", proto),
                                           ("port_status", outcome.status), ("received_data", outcome.received)]
        if let confirmation { fields.append(("confirmation_data", confirmation)) }
        return Answer.fields(fields, status: .ok, text: text, extraHeaders: budgetHeaders(remaining: admission.remaining))
    }
}

/// Response bodies in the original's shapes: JSON indented by four spaces, keys in order, ending with a newline;
/// or `key: value` lines.
enum Answer {
    static func fields(_ fields: [(String, String?)], status: HTTPResponse.Status, text: Bool,
                       extraHeaders: HTTPFields = [:]) -> ServerResponse {
        var headers = extraHeaders
        let body: String
        if text {
            headers[.contentType] = "text/plain"
            body = fields.map { "\($0.0): \($0.1 ?? "null")" }.joined(separator: "\n") + "\n"
        } else {
            headers[.contentType] = "application/json"
            let encoder = JSONEncoder()
            let members = fields.map { key, value -> String in
                let encoded = value.map { String(decoding: (try? encoder.encode($0)) ?? Data("\"\"".utf8), as: UTF8.self) } ?? "null"
                return "    \"\(key)\": \(encoded)"
            }
            body = "{\n" + members.joined(separator: ",\n") + "\n}\n"
        }
        return ServerResponse(status: status, headers: headers, body: Array(body.utf8))
    }

    static func error(_ message: String, status: HTTPResponse.Status, text: Bool,
                      extraHeaders: HTTPFields = [:]) -> ServerResponse {
        if text {
            return ServerResponse(status: status, headers: extraHeaders.merging([.contentType: "text/plain"]),
                                  body: Array("Error: \(message)\n".utf8))
        }
        return fields([("error", message)], status: status, text: false, extraHeaders: extraHeaders)
    }

    static func tooMany(wait: Duration, text: Bool, extraHeaders: HTTPFields = [:]) -> ServerResponse {
        let seconds = Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18
        let waitText = String(format: "%.2f seconds", seconds)
        let retryAfter: HTTPFields = extraHeaders.merging([.retryAfter: "\(Int(seconds.rounded(.up)))"])
        if text {
            return ServerResponse(status: .tooManyRequests, headers: retryAfter.merging([.contentType: "text/plain"]),
                                  body: Array("Error: Too many requests. Please wait. Wait time: \(waitText)\n".utf8))
        }
        return fields([("error", "Too many requests. Please wait."), ("wait_time", waitText)], status: .tooManyRequests,
                      text: false, extraHeaders: retryAfter)
    }
}

extension HTTPFields {
    func merging(_ other: HTTPFields) -> HTTPFields {
        var out = self
        for field in other { out.append(field) }
        return out
    }
}

/// The probes of the caller's port, with the original's status words.
enum Probe {
    struct Outcome {
        var status: String
        var received: String?
    }

    /// The caller's port's status, or the local error that kept the probe from being made.
    static func tcp(_ target: SocketAddress, confirmation: String?, timeout: Duration, on loop: EventLoop) async -> Result<Outcome, UVError> {
        let sent = confirmation.map { Array($0.utf8) } ?? []
        switch await PortProber.tcp(target, payload: sent, maxBytes: sent.count, timeout: timeout, on: loop) {
        case .notConnected(let error):
            return failed(error, silence: "Filtered")
        case .connected(let back, _):
            let received = back.isEmpty ? nil : String(decoding: back, as: UTF8.self)
            return .success(Outcome(status: !sent.isEmpty && back == sent ? "Reachable and Verified" : "Reachable",
                                    received: received))
        }
    }

    static func udp(_ target: SocketAddress, confirmation: String?, timeout: Duration, on loop: EventLoop) async -> Result<Outcome, UVError> {
        // A short payload: never more than the request that asked for it (no amplification).
        let sent = Array((confirmation.flatMap { $0.isEmpty ? nil : $0 } ?? "portsweep").utf8)
        switch await PortProber.udp(target, payload: sent, timeout: timeout, on: loop) {
        case .answered(let back):
            return .success(Outcome(status: back == sent ? "Reachable and Verified" : "Reachable",
                                    received: String(decoding: back, as: UTF8.self)))
        case .silence:
            return .success(Outcome(status: "Reachable or Filtered"))
        case .failed(let error):
            return failed(error, silence: "Reachable or Filtered")
        }
    }

    /// What a probe step that threw says: `silence` when its deadline passed, `Unreachable` when the caller's
    /// side refused, and the error itself when it is the server's own trouble.
    static func failed(_ error: any Error, silence: String) -> Result<Outcome, UVError> {
        guard let error = error as? UVError else { return .success(Outcome(status: "Unreachable")) }
        if error == .timedOut { return .success(Outcome(status: silence)) }
        return PortProber.isAboutThePath(error) ? .success(Outcome(status: "Unreachable")) : .failure(error)
    }

}
