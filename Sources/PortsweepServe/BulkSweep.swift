import Foundation
import HTTPTypes
import Metrics
import PortsweepEngine
import PortsweepHTTP
import PortsweepSweep
import Synchronization
import UVLoop

/// The limits of `POST /sweep`, the bulk endpoint (`serve --no-bulk` turns it off).
public struct BulkLimits: Sendable, Equatable {
    /// Port tests (ports times protocols) per client address per hour: two full sweeps of both protocols.
    public var testsPerHour = 4 * 65_535
    /// Sweeps in progress at once, over every client.
    public var maxConcurrentSweeps = 4
    /// Probes started per second, over every sweep together.
    public var probesPerSecond = 20_000
    /// Probes in flight per sweep.
    public var inFlightPerSweep = 1_024
    /// When set, a request must carry `Authorization: Bearer KEY`.
    public var apiKey: String?

    public init() {}
}

/// `POST /sweep`: many ports of the caller's own address probed in one request, the answer streamed as JSON
/// Lines (`BulkSweepWire`). The same address rules as `/check_port` (trusted proxies included); a budget of
/// tests per client address per hour, a cap on sweeps in progress and on probes per second over all of them.
final class BulkSweep: Sendable {
    let limits: BulkLimits
    private let group: EventLoopGroup
    private let budget: TestBudget
    private let shared: SharedBudgets?
    private let grouping: ClientGrouping
    private let rate: PortsweepEngine.RateLimit
    private let running = Mutex(0)
    private let inFlight = Gauge(label: "portsweep_bulk_sweeps_in_progress")
    private let probed = [Transport.tcp: Counter(label: "portsweep_bulk_probes_total", dimensions: [("protocol", "tcp")]),
                          Transport.udp: Counter(label: "portsweep_bulk_probes_total", dimensions: [("protocol", "udp")])]

    init(_ limits: BulkLimits, group: EventLoopGroup, grouping: ClientGrouping, clients: Int, shared: SharedBudgets? = nil) {
        self.limits = limits
        self.group = group
        self.shared = shared
        self.grouping = grouping
        budget = TestBudget(perHour: limits.testsPerHour, grouping: grouping, capacity: clients)
        rate = PortsweepEngine.RateLimit(perSecond: Double(max(1, limits.probesPerSecond)))
        // The limits themselves, so that a dashboard can show how close the service runs to them.
        Gauge(label: "portsweep_bulk_limit", dimensions: [("limit", "tests_per_hour")]).record(limits.testsPerHour)
        Gauge(label: "portsweep_bulk_limit", dimensions: [("limit", "concurrent_sweeps")]).record(limits.maxConcurrentSweeps)
        Gauge(label: "portsweep_bulk_limit", dimensions: [("limit", "probes_per_second")]).record(limits.probesPerSecond)
    }

    static func refused(_ reason: String) {
        Counter(label: "portsweep_bulk_refused_total", dimensions: [("reason", reason)]).increment()
    }

    /// The request checked in order: key, body, address, budget, room; then the stream.
    func handle(_ request: ServerRequest, client: Result<IPAddress, ClientAddress.Refusal>,
                record: inout CheckService.AccessRecord) async -> ServerResponse {
        if let key = limits.apiKey {
            let given = request.head.headerFields[.authorization]
            guard given == "Bearer \(key)" else {
                BulkSweep.refused("api_key")
                return Answer.error("An API key is required: Authorization: Bearer KEY", status: .unauthorized, text: false,
                                    extraHeaders: [.wwwAuthenticate: "Bearer"])
            }
        }
        let spec: BulkSweepSpec
        switch BulkSweepSpec.parse(request.body) {
        case .success(let parsed): spec = parsed
        case .failure(let message):
            BulkSweep.refused("bad_request")
            return Answer.error(message.description, status: .badRequest, text: false)
        }
        let ip: IPAddress
        switch client {
        case .success(let address): ip = address
        case .failure(let refusal):
            BulkSweep.refused("address")
            Counter(label: "portsweep_client_address_refused_total").increment()
            return Answer.error(refusal.description, status: .badRequest, text: false)
        }
        record.client = ip
        if let asked = spec.address, asked != ip {
            BulkSweep.refused("other_address")
            return Answer.error("A sweep probes only your own address (\(ip)), not \(asked)", status: .forbidden, text: false)
        }
        record.protocol = spec.transports.map { $0.rawValue.lowercased() }.joined(separator: "+")
        record.result = "\(spec.tests) tests"
        let (decision, inStore) = await take(spec.tests, for: ip)
        switch decision {
        case .admitted: break
        case .wait(let wait):
            BulkSweep.refused("budget")
            return Answer.tooMany(wait: wait, text: false)
        case .tooLarge(let most):
            BulkSweep.refused("budget")
            return Answer.error("A sweep may ask for at most \(most) port tests (ports times protocols): split it",
                                status: .contentTooLarge, text: false)
        }
        let admitted = running.withLock { count -> Int? in
            guard count < limits.maxConcurrentSweeps else { return nil }
            count += 1
            return count
        }
        guard let admitted else {
            await refund(spec.tests, for: ip, inStore: inStore)
            BulkSweep.refused("busy")
            return Answer.error("Too many sweeps in progress", status: .serviceUnavailable, text: false,
                                extraHeaders: [.retryAfter: "5"])
        }
        inFlight.record(admitted)
        // The lines come in runs, each run one chunk (`jsonLines` would add a newline per element).
        return .streaming(headers: [.contentType: "application/x-ndjson", .cacheControl: "no-store"], stream(spec, to: ip))
    }

    /// The budget in the shared store, or this process's (without one, or while it cannot decide). A request
    /// larger than the whole budget is refused here, before any store is asked.
    /// Also whether the store decided (a refund goes back where the tests were taken).
    private func take(_ tests: Int, for ip: IPAddress) async -> (TestBudget.Decision, Bool) {
        guard tests <= limits.testsPerHour else { return (.tooLarge(most: limits.testsPerHour), false) }
        if let shared, let decision = await shared.take(tests, for: ip, perHour: limits.testsPerHour, grouping: grouping) {
            return (decision, true)
        }
        return (budget.take(tests, for: ip), false)
    }

    private func refund(_ tests: Int, for ip: IPAddress, inStore: Bool) async {
        if let shared, inStore {
            await shared.refund(tests, for: ip, perHour: limits.testsPerHour, grouping: grouping)
        } else {
            budget.refund(tests, for: ip)
        }
    }

    /// Probes every test of `spec` with the sweep engine (outbound, to the caller's address, the probe line out
    /// and the caller's answer line expected back), each record yielded as its verdict comes, in port order.
    private func stream(_ spec: BulkSweepSpec, to ip: IPAddress) -> AsyncStream<[UInt8]> {
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream(bufferingPolicy: .unbounded)
        let task = Task { [self] in
            defer {
                inFlight.record(running.withLock { count in count -= 1; return count })
                continuation.finish()
            }
            var configuration = SweepConfiguration(ports: PortSet(spec.ports), target: ip, timeout: spec.timeout,
                                                   concurrency: limits.inFlightPerSweep, transports: Set(spec.transports))
            configuration.direction = .outbound(line: WireText(copying: spec.line), answer: WireText(copying: spec.answer))
            configuration.rate = spec.probesPerSecond
            configuration.sharedRate = rate
            guard let sweep = try? Sweep(configuration, group: group) else { return }
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            var done = 0
            var batch: [UInt8] = []
            var flushed = ContinuousClock.now
            do {
                for try await result in sweep.results() {
                    probed[result.transport]?.increment()
                    batch += (try? encoder.encode(Self.record(result))).map(Array.init) ?? []
                    batch.append(0x0A)
                    done += 1
                    // Lines go out in runs (a chunk per line would cost a write each), at least every 50 ms.
                    if batch.count >= 16 * 1024 || ContinuousClock.now - flushed > .milliseconds(50) {
                        continuation.yield(batch)
                        batch = []
                        flushed = ContinuousClock.now
                    }
                }
            } catch {
                // This server's own trouble (out of descriptors): the stream ends without its last line, and
                // the caller names the ports left.
                if !batch.isEmpty { continuation.yield(batch) }
                return
            }
            if !batch.isEmpty { continuation.yield(batch) }
            guard !Task.isCancelled else { return }
            continuation.yield(((try? encoder.encode(BulkSweepEnd(probed: done))).map(Array.init) ?? []) + [0x0A])
        }
        // The caller went away (or the server drains): stop probing (cancelling the loop over the results
        // cancels the sweep and closes its handles).
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// An outbound verdict in the checker's words.
    static func record(_ result: PortResult) -> BulkProbeRecord {
        let (port, proto) = (Int(result.port), result.transport == .tcp ? "tcp" : "udp")
        let error = result.errno == 0 ? nil : UVError.name(ofErrno: result.errno)
        switch result.outcome {
        case .pass:
            return BulkProbeRecord(port: port, protocol: proto, connected: result.transport == .tcp, answered: true)
        case .fail:  // TCP: no connection
            return BulkProbeRecord(port: port, protocol: proto, connected: false, answered: false, error: error)
        case .recv:  // connected (TCP) and sent; nothing came back in time
            return BulkProbeRecord(port: port, protocol: proto, connected: result.transport == .tcp, answered: false, error: error)
        case .send:  // UDP: an ICMP error came back
            return BulkProbeRecord(port: port, protocol: proto, connected: false, answered: false, error: error)
        case .used:  // something else answered, or closed before answering
            return BulkProbeRecord(port: port, protocol: proto, connected: result.transport == .tcp, answered: false,
                                   wrongAnswer: result.errno == EBADMSG, error: error)
        default:  // this server's own trouble on that port
            return BulkProbeRecord(port: port, protocol: proto, connected: false, answered: false,
                                   error: "checker:" + (error ?? "EIO"))
        }
    }
}

/// A bulk request, checked.
struct BulkSweepSpec: Sendable {
    var ports: [UInt16]
    var transports: [Transport]
    var timeout: Duration
    var line: [UInt8]
    var answer: [UInt8]
    var address: IPAddress?
    /// The caller's own ceiling of probes per second.
    var probesPerSecond: Double?

    var tests: Int { ports.count * transports.count }

    /// The body as JSON, or the message that says what is wrong with it.
    static func parse(_ body: [UInt8]) -> Result<BulkSweepSpec, BulkSpecError> {
        guard !body.isEmpty else { return .failure("A JSON body is required: {\"ports\": \"1-1024\", \"protocols\": [\"tcp\"], \"timeout_ms\": 1000, \"token\": \"...\"}") }
        let request: BulkSweepRequest
        do {
            request = try JSONDecoder().decode(BulkSweepRequest.self, from: Data(body))
        } catch {
            return .failure("The body is not a sweep request: ports, protocols, timeout_ms and token are required")
        }
        let ports: PortSet
        do { ports = try PortSet(parsing: request.ports) } catch { return .failure("Bad ports: \(error.reason)") }
        var transports: [Transport] = []
        for name in request.protocols {
            switch name.lowercased() {
            case "tcp": if !transports.contains(.tcp) { transports.append(.tcp) }
            case "udp": if !transports.contains(.udp) { transports.append(.udp) }
            default: return .failure("Unsupported protocol: use tcp and udp")
            }
        }
        guard !transports.isEmpty else { return .failure("No protocol asked: use tcp and udp") }
        guard (100...BulkSweepWire.maxTimeoutMilliseconds).contains(request.timeoutMilliseconds) else {
            return .failure("timeout_ms must be from 100 to \(BulkSweepWire.maxTimeoutMilliseconds)")
        }
        guard BulkSweepWire.isValidToken(request.token) else { return .failure("The token must be 8 to 64 letters and digits") }
        if let asked = request.probesPerSecond, !(asked >= 1 && asked <= 10_000_000) {
            return .failure("probes_per_second must be from 1 to 10000000")
        }
        var address: IPAddress?
        if let text = request.address {
            guard let parsed = IPAddress(text) else { return .failure("Bad address: \(text.prefix(64))") }
            address = parsed.unmapped
        }
        return .success(BulkSweepSpec(ports: ports.sorted, transports: transports.sorted(),
                                      timeout: .milliseconds(request.timeoutMilliseconds),
                                      line: BulkSweepWire.probeLine(token: request.token),
                                      answer: BulkSweepWire.answerLine(token: request.token), address: address,
                                      probesPerSecond: request.probesPerSecond))
    }
}

struct BulkSpecError: Error, ExpressibleByStringLiteral, CustomStringConvertible {
    let description: String
    init(stringLiteral value: String) { description = value }
    init(_ value: String) { description = value }
}

extension Result where Failure == BulkSpecError {
    static func failure(_ message: String) -> Result { .failure(BulkSpecError(message)) }
}

/// Port tests per client address per hour: a bucket per client that fills at `perHour` an hour up to `perHour`,
/// a whole request taken at once. At most `capacity` clients are remembered (the least recent forgotten).
final class TestBudget: Sendable {
    enum Decision: Equatable {
        case admitted
        case wait(Duration)
        case tooLarge(most: Int)
    }

    private struct Bucket {
        var tokens: Double
        var at: Int64
    }

    private let perHour: Double
    private let grouping: ClientGrouping
    private let state: Mutex<LRUTable<IPAddress, Bucket>>
    private static let origin = ContinuousClock.now

    init(perHour: Int, grouping: ClientGrouping, capacity: Int) {
        self.perHour = Double(max(1, perHour))
        self.grouping = grouping
        state = Mutex(LRUTable(capacity: max(1, capacity)))
    }

    private static var now: Int64 {
        let (seconds, atto) = (ContinuousClock.now - origin).components
        return seconds * 1_000_000_000 + atto / 1_000_000_000
    }

    func take(_ tests: Int, for ip: IPAddress, now: Int64 = TestBudget.now) -> Decision {
        guard Double(tests) <= perHour else { return .tooLarge(most: Int(perHour)) }
        let key = grouping.key(ip)
        return state.withLock { table in
            var bucket = table[key] ?? Bucket(tokens: perHour, at: now)
            bucket.tokens = min(perHour, bucket.tokens + Double(now - bucket.at) / 3.6e12 * perHour)
            bucket.at = now
            defer { _ = table.set(key, bucket) }
            guard bucket.tokens >= Double(tests) else {
                let seconds = (Double(tests) - bucket.tokens) / perHour * 3600
                return .wait(.milliseconds(Int64((seconds * 1000).rounded(.up))))
            }
            bucket.tokens -= Double(tests)
            return .admitted
        }
    }

    /// Gives back what a refused request took.
    func refund(_ tests: Int, for ip: IPAddress) {
        let key = grouping.key(ip)
        state.withLock { table in
            table.update(key) { $0.tokens = min(perHour, $0.tokens + Double(tests)) }
        }
    }
}
