public import PortsweepEngine
public import UVLoop

/// `sweep --to`: before the sweep, the far `listen --reply echo` is asked which ports it holds (its
/// `ListenerRoster`), so that a port it could not hold is reported with its own reason, never as blocked.
public enum FarListener {
    /// Where the question goes: the TCP ports most often open on the way out, and 16 spread evenly over the
    /// sweep's own (the far listen holds those if any). All at once; the first roster that comes back wins.
    public static func candidates(_ ports: PortSet) -> [UInt16] {
        let likely: [UInt16] = [443, 80, 22, 53, 8080, 8443, 993, 587]
        let sorted = ports.sorted
        let step = max(1, sorted.count / 16)
        let spread = stride(from: step / 2, to: sorted.count, by: step).prefix(16).map { sorted[$0] }
        return likely + spread.filter { !likely.contains($0) }
    }

    /// Asks on every candidate port at once, each within `timeout`; nil when none answers with a roster.
    public static func ask(_ host: IPAddress, ports candidates: [UInt16], timeout: Duration,
                           on loop: EventLoop) async -> ListenerRoster? {
        await withTaskGroup(of: ListenerRoster?.self) { tasks in
            for port in candidates {
                tasks.addTask { await ask(SocketAddress(host, port: port), timeout: timeout, on: loop) }
            }
            for await answer in tasks {
                if let answer {
                    tasks.cancelAll()
                    return answer
                }
            }
            return nil
        }
    }

    /// One port: connect, ask, read one line (at most `ListenerRoster.maxAnswer` bytes), close with RST.
    static func ask(_ address: SocketAddress, timeout: Duration, on loop: EventLoop) async -> ListenerRoster? {
        guard let connection = try? await TCPConnection.connect(to: address, on: loop, timeout: timeout) else { return nil }
        var line: [UInt8] = []
        do {
            try await connection.write(ListenerRoster.question, timeout: timeout)
            while !line.contains(0x0A) && line.count <= ListenerRoster.maxAnswer {
                let chunk = try await connection.read(timeout: timeout)
                if chunk.isEmpty { break }
                line += chunk
            }
        } catch {
            line = []
        }
        await connection.close(reset: true)
        guard let end = line.firstIndex(of: 0x0A) else { return nil }
        return ListenerRoster.parse(line[..<end])
    }
}

extension SweepConfiguration {
    /// Ports of this sweep the far listener does not hold, with their verdicts (see `ListenerRoster.unheld`),
    /// leaving out those already known.
    public func unheld(by roster: ListenerRoster) -> [PortResult] {
        let known = Set(knownInScope.map { Int($0.port) << 1 | ($0.transport == .tcp ? 0 : 1) })
        return roster.unheld(ports, transports: orderedTransports)
            .filter { !known.contains(Int($0.port) << 1 | ($0.transport == .tcp ? 0 : 1)) }
    }
}
