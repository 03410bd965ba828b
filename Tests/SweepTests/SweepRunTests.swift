import Foundation
import PortsweepEngine
import PortsweepSweep
import Testing
import UVLoop

/// Sockets the test opens itself, with plain syscalls, to play "another process".
enum TestSockets {
    /// A socket of `type` bound to `address` (host byte order; 0 is 0.0.0.0) on a port the kernel picks;
    /// `reuse` sets SO_REUSEADDR first. Returns the descriptor and the port.
    static func bound(_ type: __socket_type, address: in_addr_t = 0, reuse: Bool = false) throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(type.rawValue), 0)
        try #require(fd >= 0)
        if reuse {
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = address.bigEndian
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        try #require(ok)
        return (fd, UInt16(bigEndian: addr.sin_port))
    }

    /// A listening TCP socket on 0.0.0.0, port 0 (a free port); returns the descriptor and the port.
    static func listen() throws -> (fd: Int32, port: UInt16) {
        let socket = try bound(SOCK_STREAM)
        try #require(Glibc.listen(socket.fd, 16) == 0)
        return socket
    }

    /// A bound UDP socket on 0.0.0.0, port 0, with SO_REUSEADDR (as many daemons set it).
    static func udp() throws -> (fd: Int32, port: UInt16) {
        try bound(SOCK_DGRAM, reuse: true)
    }

    /// Sockets bound to 127.0.0.1 on free ports and kept open, so that nothing answers there: a TCP socket that
    /// does not listen (a connection is refused), or a UDP socket connected to port 9 (it takes datagrams from
    /// there only, so others get ICMP port unreachable). While they are held nobody else (a parallel test, or
    /// the kernel picking an ephemeral port) can use the port on 127.0.0.1, so "closed" stays closed.
    static func closedPortsOnLoopback(_ count: Int, udp: Bool = false) throws -> [(fd: Int32, port: UInt16)] {
        try (0..<count).map { _ in
            let socket = try bound(udp ? SOCK_DGRAM : SOCK_STREAM, address: 0x7F00_0001)
            if udp {
                var peer = sockaddr_in()
                peer.sin_family = sa_family_t(AF_INET)
                peer.sin_port = UInt16(9).bigEndian
                peer.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian
                let connected = withUnsafePointer(to: &peer) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        connect(socket.fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                    }
                }
                try #require(connected)
            }
            return socket
        }.sorted { $0.port < $1.port }
    }

    /// Ports that were free a moment ago (held together, then all released).
    static func freePorts(_ count: Int) throws -> [UInt16] {
        let held = try (0..<count).map { _ in try listen() }
        for socket in held { close(socket.fd) }
        return held.map(\.port).sorted()
    }
}

@Suite struct SweepRunTests {
    @Test func loopbackPortsAllPass() async throws {
        let group = try TestLoops.group(loopCount: 2)
        defer { group.shutdown() }
        let ports = try await TestLoops.onLoop(group.loops[0]) { try TestSockets.freePorts(40) }
        let sweep = try Sweep(SweepConfiguration(ports: PortSet(ports), timeout: .seconds(3)), group: group)
        let (results, summary) = try await sweep.run()
        #expect(results.map(\.port) == ports)
        #expect(results.allSatisfy { $0.outcome == .pass && $0.transport == .tcp })
        #expect(summary.total == 40 && summary.allPassed && summary.counts == [.pass: 40])
    }

    @Test func aPortHeldByAnotherSocketIsUsed() async throws {
        let group = try TestLoops.group(loopCount: 1)
        defer { group.shutdown() }
        let held = try await TestLoops.onLoop(group.loops[0]) { try TestSockets.listen() }
        defer { close(held.fd) }
        var ports = try await TestLoops.onLoop(group.loops[0]) { try TestSockets.freePorts(3) }
        ports.append(held.port)
        let sweep = try Sweep(SweepConfiguration(ports: PortSet(ports)), group: group)
        let (results, summary) = try await sweep.run()
        let verdicts = Dictionary(uniqueKeysWithValues: results.map { ($0.port, $0.outcome) })
        #expect(verdicts[held.port] == .used)
        #expect(results.first { $0.port == held.port }?.errno == EADDRINUSE)
        #expect(results.filter { $0.port != held.port }.allSatisfy { $0.outcome.isPass })
        #expect(!summary.allPassed && summary.retried == 1)
    }

    @Test func udpLoopbackPortsAllPassAndAHeldOneIsUsed() async throws {
        let group = try TestLoops.group(loopCount: 2)
        defer { group.shutdown() }
        let held = try await TestLoops.onLoop(group.loops[0]) { try TestSockets.udp() }
        defer { close(held.fd) }
        var ports = try await TestLoops.onLoop(group.loops[0]) { try TestSockets.freePorts(30) }
        ports.append(held.port)
        let sweep = try Sweep(SweepConfiguration(ports: PortSet(ports), transports: [.udp]), group: group)
        let (results, summary) = try await sweep.run()
        #expect(results.map(\.port) == ports.sorted())
        #expect(results.allSatisfy { $0.transport == .udp })
        #expect(results.first { $0.port == held.port }?.outcome == .used)
        #expect(results.filter { $0.port != held.port }.allSatisfy { $0.outcome.isPass })
        #expect(summary.counts == [.pass: 30, .used: 1])
    }

    @Test func udpToAPortWithNothingThereIsSendWithTheICMPReason() async throws {
        // Servers on 127.0.0.2, datagrams to 127.0.0.1 where nothing listens: ICMP port unreachable comes back.
        let group = try EventLoopGroup(loopCount: 1)
        defer { group.shutdown() }
        let closed = try TestSockets.closedPortsOnLoopback(5, udp: true)
        defer { for socket in closed { close(socket.fd) } }
        let ports = closed.map(\.port)
        let sweep = try Sweep(SweepConfiguration(ports: PortSet(ports), bind: IPAddress("127.0.0.2")!,
                                                 timeout: .seconds(10), transports: [.udp]), group: group)
        let start = ContinuousClock.now
        let (results, _) = try await sweep.run()
        #expect(results.count == 5)
        #expect(results.allSatisfy { $0.outcome == .send && $0.errno == ECONNREFUSED })
        // Under the 10 s timeout with room: a full parallel run (blocking end-to-end tests on a 2-thread pool) has
        // delayed this by 6 s.
        #expect(ContinuousClock.now - start < .seconds(9), "the ICMP error must end the wait, not the timeout")
    }

    @Test func bothProtocolsStreamInPortOrderTCPFirst() async throws {
        let group = try TestLoops.group(loopCount: 2)
        defer { group.shutdown() }
        let ports = try await TestLoops.onLoop(group.loops[0]) { try TestSockets.freePorts(20) }
        let sweep = try Sweep(SweepConfiguration(ports: PortSet(ports), transports: [.tcp, .udp]), group: group)
        let (results, summary) = try await sweep.run()
        #expect(results.map(\.port) == ports.flatMap { [$0, $0] })
        #expect(results.map(\.transport) == ports.flatMap { _ in [Transport.tcp, .udp] })
        #expect(summary.total == 40 && summary.allPassed)
    }

    @Test func aClosedTargetPortFailsFast() async throws {
        // Listeners on 127.0.0.2 only; the target 127.0.0.1 has nothing listening there: refused at once.
        let group = try EventLoopGroup(loopCount: 1)
        defer { group.shutdown() }
        let closed = try TestSockets.closedPortsOnLoopback(5)
        defer { for socket in closed { close(socket.fd) } }
        let ports = closed.map(\.port)
        let sweep = try Sweep(SweepConfiguration(ports: PortSet(ports), target: .loopbackV4, bind: IPAddress("127.0.0.2")!,
                                                 timeout: .seconds(10)), group: group)
        let start = ContinuousClock.now
        let (results, _) = try await sweep.run()
        #expect(results.map(\.port) == ports)
        #expect(results.allSatisfy { $0.outcome == .fail && $0.errno == ECONNREFUSED },
                "\(results.map { "\($0.port) \($0.outcome) errno \($0.errno)" })")
        #expect(ContinuousClock.now - start < .seconds(9), "refused at once, not the 10 s timeout")
    }

    @Test func aBindAddressNotOnThisMachineIsALocalError() throws {
        let group = try EventLoopGroup(loopCount: 1)
        defer { group.shutdown() }
        #expect(throws: SweepError.self) {
            try Sweep(SweepConfiguration(ports: PortSet([40000]), target: IPAddress("192.0.2.1")!,
                                         bind: IPAddress("192.0.2.1")!), group: group)
        }
    }

    @Test func noDescriptorLeakedAfterA5000PortSweep() async throws {
        let group = try EventLoopGroup(loopCount: 2)
        defer { group.shutdown() }
        // Outside the ephemeral range (32768-60999), so other tests' client sockets do not land in it.
        let ports = try PortSet(parsing: "20000-24999")
        let sweep = try Sweep(SweepConfiguration(ports: ports, transports: [.tcp, .udp]), group: group)
        let (results, _) = try await sweep.run()
        #expect(results.map(\.port) == ports.sorted.flatMap { [$0, $0] }, "results must arrive in port order")
        // Another process may hold a port of the range (USED); nothing else may go wrong on loopback.
        #expect(results.allSatisfy { $0.outcome == .pass || $0.outcome == .used })
        // Other suites run in parallel in this process (pipes, sockets of their own), so the check is exact
        // instead of a count: not one of this process's descriptors is a socket on a port of the range.
        let leaked = OpenSockets.ofThisProcess(touching: 20000...24999)
        #expect(leaked.isEmpty, "sockets left open: \(leaked.prefix(10))")
    }

    @Test(.enabled(if: IsolatedNetwork.available, "needs root for a network namespace of its own"))
    func cancellingTheConsumerStopsTheSweep() async throws {
        // Every port of both protocols, one test at a time per loop: many seconds of work, so the cancellation
        // lands mid-sweep even when other suites keep the consumer waiting. In a namespace of its own, so the
        // sweep takes no port another test of this process picked as free.
        let group = try IsolatedNetwork.group(loopCount: 2)
        defer { group.shutdown() }
        let sweep = try Sweep(SweepConfiguration(ports: try PortSet(parsing: "1-65535"), concurrency: 1,
                                                 transports: [.tcp, .udp]), group: group)
        let consumer = Task {
            var seen = 0
            for try await _ in sweep.results() {
                seen += 1
                if seen == 1 { withUnsafeCurrentTask { $0?.cancel() } }
            }
            return seen
        }
        let seen = try await consumer.value
        #expect(seen < 1000, "the sequence must end soon after its consumer is cancelled")
        #expect(sweep.summary == nil, "a cancelled sweep has no summary")
    }
}

/// This process's open sockets, found through /proc/self/fd and matched by inode in /proc/net.
enum OpenSockets {
    /// Lines of /proc/net/{tcp,tcp6,udp,udp6} for sockets of this process whose local or remote port is in `range`.
    static func ofThisProcess(touching range: ClosedRange<UInt16>) -> [String] {
        var inodes = Set<String>()
        for fd in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)"),
                  target.hasPrefix("socket:[") else { continue }
            inodes.insert(String(target.dropFirst(8).dropLast()))
        }
        var found: [String] = []
        for table in ["tcp", "tcp6", "udp", "udp6"] {
            guard let text = try? String(contentsOfFile: "/proc/net/\(table)", encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                guard fields.count > 9, inodes.contains(String(fields[9])) else { continue }
                let ports = [fields[1], fields[2]].compactMap { $0.split(separator: ":").last.flatMap { UInt16($0, radix: 16) } }
                if ports.contains(where: range.contains) { found.append("\(table): \(line)") }
            }
        }
        return found
    }
}
