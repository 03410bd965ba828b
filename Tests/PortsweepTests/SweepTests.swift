import Foundation
import PortsweepEngine
import PortsweepSweep
import Testing
import UVLoop

/// Sockets the test opens itself, with plain syscalls, to play "another process".
enum TestSockets {
    /// A listening TCP socket on 0.0.0.0, port 0 (a free port); returns the descriptor and the port.
    static func listen() throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(bound == 0)
        try #require(Glibc.listen(fd, 16) == 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return (fd, UInt16(bigEndian: addr.sin_port))
    }

    /// Ports that were free a moment ago (held together, then all released).
    static func freePorts(_ count: Int) throws -> [UInt16] {
        let held = try (0..<count).map { _ in try listen() }
        for socket in held { close(socket.fd) }
        return held.map(\.port).sorted()
    }
}

extension SocketTests {
@Suite struct SweepTests {
    @Test func loopbackPortsAllPass() async throws {
        let group = EventLoopGroup(loopCount: 2)
        defer { group.shutdown() }
        let ports = try TestSockets.freePorts(40)
        let sweep = try Sweep(SweepConfiguration(ports: PortSet(ports), timeout: .seconds(3)), group: group)
        let (results, summary) = try await sweep.run()
        #expect(results.map(\.port) == ports)
        #expect(results.allSatisfy { $0.outcome == .pass && $0.transport == .tcp })
        #expect(summary.total == 40 && summary.allPassed && summary.counts == [.pass: 40])
    }

    @Test func aPortHeldByAnotherSocketIsUsed() async throws {
        let group = EventLoopGroup(loopCount: 1)
        defer { group.shutdown() }
        let held = try TestSockets.listen()
        defer { close(held.fd) }
        var ports = try TestSockets.freePorts(3)
        ports.append(held.port)
        let sweep = try Sweep(SweepConfiguration(ports: PortSet(ports)), group: group)
        let (results, summary) = try await sweep.run()
        let verdicts = Dictionary(uniqueKeysWithValues: results.map { ($0.port, $0.outcome) })
        #expect(verdicts[held.port] == .used)
        #expect(results.first { $0.port == held.port }?.errno == EADDRINUSE)
        #expect(results.filter { $0.port != held.port }.allSatisfy { $0.outcome.isPass })
        #expect(!summary.allPassed && summary.retried == 1)
    }

    @Test func aClosedTargetPortFailsFast() async throws {
        // Listeners on 127.0.0.2 only; the target 127.0.0.1 has nothing there: refused at once.
        let group = EventLoopGroup(loopCount: 1)
        defer { group.shutdown() }
        let ports = try TestSockets.freePorts(5)
        let sweep = try Sweep(SweepConfiguration(ports: PortSet(ports), target: .loopbackV4, bind: IPAddress("127.0.0.2")!,
                                                 timeout: .seconds(10)), group: group)
        let start = ContinuousClock.now
        let (results, _) = try await sweep.run()
        #expect(results.allSatisfy { $0.outcome == .fail && $0.errno == ECONNREFUSED })
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test func aBindAddressNotOnThisMachineIsALocalError() throws {
        let group = EventLoopGroup(loopCount: 1)
        defer { group.shutdown() }
        #expect(throws: SweepError.self) {
            try Sweep(SweepConfiguration(ports: PortSet([40000]), target: IPAddress("192.0.2.1")!,
                                         bind: IPAddress("192.0.2.1")!), group: group)
        }
    }

    @Test func noDescriptorLeakedAfterA5000PortSweep() async throws {
        let group = EventLoopGroup(loopCount: 2)
        defer { group.shutdown() }
        // Outside the ephemeral range (32768-60999), so other tests' client sockets do not land in it.
        // libuv opens one reserve descriptor per loop (for EMFILE in accept) on the first listen: warm up first.
        _ = try await Sweep(SweepConfiguration(ports: PortSet(try TestSockets.freePorts(200))), group: group).run()
        let ports = try PortSet(parsing: "20000-24999")
        let sweep = try Sweep(SweepConfiguration(ports: ports), group: group)
        let before = DescriptorBudget.openDescriptorCount()
        let (results, _) = try await sweep.run()
        let after = DescriptorBudget.openDescriptorCount()
        #expect(results.map(\.port) == ports.sorted, "results must arrive in port order")
        // Another process may hold a port of the range (USED); nothing else may go wrong on loopback.
        #expect(results.allSatisfy { $0.outcome == .pass || $0.outcome == .used })
        #expect(after == before, "descriptors open before: \(before), after: \(after)")
    }

    @Test func cancellingARunStopsTheSweep() async throws {
        let group = EventLoopGroup(loopCount: 2)
        defer { group.shutdown() }
        let sweep = try Sweep(SweepConfiguration(ports: try PortSet(parsing: "20000-29999")), group: group)
        let task = Task { try await sweep.run() }
        while sweep.completed == 0 { try await group.loops[0].sleep(for: .milliseconds(1)) }
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(sweep.completed < sweep.total)
    }
}
}
