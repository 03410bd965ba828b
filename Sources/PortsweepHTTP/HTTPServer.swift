import Metrics
import Synchronization
public import UVLoop

/// An HTTP/1.1 server on one loop, answering with an async handler: serve's web service (and, next, the
/// dashboard). A `ConnectionShard` with `HTTPConnectionHandler`s: an idle keep-alive connection costs its
/// handle and a few hundred bytes of state, no task; a task runs only while a request is being answered.
public final class HTTPServer: Sendable {
    public let localAddress: SocketAddress
    private let shard: LoopBox<ConnectionShard>

    /// Binds and listens on `loop`; throws `UVError` (address in use, not local, privileged port).
    public init(on address: SocketAddress, loop: EventLoop, limits: ConnectionLimits,
                metricsPrefix: String? = nil, handler: @escaping HTTPConnectionHandler.Handler) async throws {
        let opened: Result<(LoopBox<ConnectionShard>, UInt16), UVError> = await loop.run {
            let shard = ConnectionShard(loop: loop, limits: limits, budget: ConnectionBudget(limit: limits.maxConnections)) { _ in
                HTTPConnectionHandler(.deferred(handler), limits: limits)
            }
            if let metricsPrefix { shard.metrics = ConnectionMetrics(prefix: metricsPrefix) }
            do throws(UVError) {
                let port = try shard.listen(on: address)
                return .success((LoopBox(shard, loop: loop), port))
            } catch {
                shard.stop {}
                return .failure(error)
            }
        }
        let (shard, port) = try opened.get()
        self.shard = shard
        localAddress = SocketAddress(address.ip, port: port)
    }

    /// What the limits did so far.
    public var counters: ConnectionCounters {
        get async {
            let shard = self.shard
            return await shard.loop.run { shard.value.counters }
        }
    }

    /// Stops accepting, closes idle connections, and returns once every request in progress has its answer,
    /// or after `within`.
    public func drain(within: Duration) async {
        let shard = self.shard
        let once = Mutex<CheckedContinuation<Void, Never>?>(nil)
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            once.withLock { $0 = done }
            let resume: @Sendable () -> Void = { once.withLock { $0.take() }?.resume() }
            shard.loop.execute {
                // Whichever comes first, the drain or the deadline, closes the timer: a timer left open is a
                // handle the loop finds at shutdown.
                var timer: LoopTimer?
                timer = LoopTimer(on: shard.loop) {
                    timer?.close()
                    timer = nil
                    resume()
                }
                timer?.start(after: within)
                shard.value.drain {
                    timer?.close()
                    timer = nil
                    resume()
                }
            }
        }
    }

    /// Closes every connection and the listener; returns once all are released.
    public func stop() async {
        let shard = self.shard
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            shard.loop.execute { shard.value.stop { done.resume() } }
        }
    }
}

/// swift-metrics counters of what a server's limits did (for /metrics): `PREFIX_connections_evicted_total`...
public struct ConnectionMetrics {
    let evicted, refused, requestTimeouts, tooSlow, idleClosed, backpressurePauses, acceptErrors, refusedRequests: Counter

    public init(prefix: String) {
        evicted = Counter(label: "\(prefix)_connections_evicted_total")
        refused = Counter(label: "\(prefix)_connections_refused_total")
        requestTimeouts = Counter(label: "\(prefix)_request_timeouts_total")
        tooSlow = Counter(label: "\(prefix)_connections_too_slow_total")
        idleClosed = Counter(label: "\(prefix)_connections_idle_closed_total")
        backpressurePauses = Counter(label: "\(prefix)_backpressure_pauses_total")
        acceptErrors = Counter(label: "\(prefix)_accept_errors_total")
        refusedRequests = Counter(label: "\(prefix)_requests_refused_total")
    }

    func record(from old: ConnectionCounters, to new: ConnectionCounters) {
        func add(_ counter: Counter, _ delta: Int) { if delta > 0 { counter.increment(by: delta) } }
        add(evicted, new.evicted - old.evicted)
        add(refused, new.refused - old.refused)
        add(requestTimeouts, new.requestTimeouts - old.requestTimeouts)
        add(tooSlow, new.tooSlow - old.tooSlow)
        add(idleClosed, new.idleClosed - old.idleClosed)
        add(backpressurePauses, new.backpressurePauses - old.backpressurePauses)
        add(acceptErrors, new.acceptErrors - old.acceptErrors)
        add(refusedRequests, new.refusedRequests - old.refusedRequests)
    }
}
