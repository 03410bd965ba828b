import Synchronization
import Testing
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The callback kit's slabs on real loopback sockets: the sweep's exchange done by hand, one close discipline,
/// and a loop that stops with nothing left open.
@Suite struct SlabTests {
    static let hello = WireText("client -> server\n")

    /// A listener, a client and an accepted server in three slabs: client sends, server checks and echoes.
    final class Exchange: TCPSlabDelegate {
        let listeners: TCPSlab, clients: TCPSlab, servers: TCPSlab
        let done: @Sendable (String) -> Void
        var serverMatched: UInt8 = 0, clientMatched: UInt8 = 0
        var closing = 0
        var verdict = ""

        init(loop: EventLoop, done: @escaping @Sendable (String) -> Void) {
            listeners = TCPSlab(on: loop, capacity: 2)
            clients = TCPSlab(on: loop, capacity: 2, connects: true, writes: true)
            servers = TCPSlab(on: loop, capacity: 2, writes: true)
            self.done = done
            for slab in [listeners, clients, servers] { slab.delegate = self }
        }

        func start() {
            let local = PortAddress(.loopbackV4)
            guard listeners.open(1) == nil else { return finish("open failed") }
            if let error = listeners.bind(1, to: local, port: 0) ?? listeners.listen(1, backlog: 1) {
                return finish("listen: \(error)")
            }
            guard let port = listeners.localPort(1), port != 0 else { return finish("no port") }
            guard clients.open(1, family: .v4) == nil else { return finish("client open failed") }
            clients.set(.reuseAddress, 1, on: 1)
            if let error = clients.connect(1, to: local, port: port) { finish("connect: \(error)") }
        }

        func incomingConnection(_ slab: TCPSlab, _ slot: Int32, error: UVError?) {
            guard error == nil, servers.open(slot) == nil, servers.accept(slot, from: listeners, slot) == nil else {
                return finish("accept failed")
            }
            _ = servers.startReading(slot)
        }

        func connected(_ slab: TCPSlab, _ slot: Int32, error: UVError?) {
            if let error { return finish("connect: \(error)") }
            _ = clients.write(SlabTests.hello, on: slot)
            _ = clients.startReading(slot)
        }

        func received(_ slab: TCPSlab, _ slot: Int32, _ bytes: ReceivedBytes) {
            if slab === servers {
                guard SlabTests.hello.matches(bytes, at: &serverMatched) else { return finish("server saw other bytes") }
                if Int(serverMatched) == SlabTests.hello.count { _ = servers.write(SlabTests.hello, on: slot) }
            } else {
                guard SlabTests.hello.matches(bytes, at: &clientMatched) else { return finish("client saw other bytes") }
                if Int(clientMatched) == SlabTests.hello.count { finish("exchanged") }
            }
        }

        func readEnded(_ slab: TCPSlab, _ slot: Int32, error: UVError?) { finish("read ended: \(String(describing: error))") }

        func closed(_ slab: TCPSlab, _ slot: Int32) {
            closing -= 1
            if closing == 0 { done(verdict) }
        }

        private func finish(_ text: String) {
            guard verdict.isEmpty else { return }
            verdict = text
            for slab in [listeners, clients, servers] where slab.openSlots > 0 {
                closing += 1
                slab.close(1, reset: slab === clients)
            }
            if closing == 0 { done(verdict) }
        }
    }

    @Test func aTCPExchangeOnSlotsClosesEveryHandle() async throws {
        let loop = try EventLoop(name: "slab-test")
        let verdict = await withCheckedContinuation { (result: CheckedContinuation<String, Never>) in
            loop.execute {
                let exchange = Exchange(loop: loop) { result.resume(returning: $0) }
                exchange.start()
                // The exchange lives in its slabs' delegate slot; keep it until the loop stops.
                Unmanaged.passUnretained(exchange).retain()
            }
        }
        #expect(verdict == "exchanged")
        loop.shutdown()
        #expect(loop.handlesLeftOpen == 0)
    }

    /// A server slot and the shared client; the client also sends to a port nobody holds.
    final class Datagrams: UDPSlabDelegate {
        let servers: UDPSlab, client: UDPSlab
        let done: @Sendable ([String]) -> Void
        var seen: [String] = []
        var closedPort: UInt16 = 0
        var open = 0

        init(loop: EventLoop, done: @escaping @Sendable ([String]) -> Void) {
            servers = UDPSlab(on: loop, capacity: 1)
            client = UDPSlab(on: loop, capacity: 1, batchedReceive: true)
            self.done = done
            servers.delegate = self
            client.delegate = self
        }

        func start(serverPort: UInt16, closedPort: UInt16) {
            self.closedPort = closedPort
            let local = PortAddress(.loopbackV4)
            guard servers.open(0) == nil, servers.bind(0, to: local, port: serverPort) == nil,
                  servers.startReceiving(0) == nil else { return finish("server failed") }
            guard client.open(0, family: .v4) == nil, client.bind(0, to: PortAddress(.anyV4), port: 0) == nil else {
                return finish("client failed")
            }
            client.receiveErrors(on: 0, family: .v4)
            _ = client.startReceiving(0)
            // The server first: an ICMP error pending on the socket fails the next send (and that send is lost).
            _ = client.trySend(SlabTests.hello, on: 0, to: local, port: serverPort)
            _ = client.trySend(SlabTests.hello, on: 0, to: local, port: closedPort)
        }

        func received(_ slab: UDPSlab, _ slot: Int32, _ bytes: ReceivedBytes, from peer: DatagramPeer) {
            if slab === servers {
                seen.append("server got \(SlabTests.hello.isExactly(bytes) ? "hello" : "other")")
                _ = servers.trySend(SlabTests.hello, on: 0, to: peer)
            } else {
                seen.append("client got \(SlabTests.hello.isExactly(bytes) ? "hello" : "other")")
                drainErrors()
            }
        }

        func receiveFailed(_ slab: UDPSlab, _ slot: Int32, error: UVError) { drainErrors() }

        private func drainErrors() {
            client.readErrorQueue(0) { port, errno in
                seen.append(port == closedPort ? "error \(errno == ECONNREFUSED ? "ECONNREFUSED" : "\(errno)") from the closed port" : "error from \(port)")
            }
            if seen.contains("client got hello") && seen.contains(where: { $0.hasPrefix("error") }) { finish("") }
        }

        func closed(_ slab: UDPSlab, _ slot: Int32) {
            open -= 1
            if open == 0 { done(seen) }
        }

        private var finished = false

        private func finish(_ note: String) {
            guard !finished else { return }
            finished = true
            if !note.isEmpty { seen.append(note) }
            for slab in [servers, client] where slab.openSlots > 0 {
                open += 1
                slab.close(0)
            }
            if open == 0 { done(seen) }
        }
    }

    /// Two ports nobody holds: bound and closed at once (the kernel does not hand them out again right away).
    static func freeUDPPorts() -> (UInt16, UInt16) {
        func one() -> UInt16 {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length); return getsockname(fd, $0, &length) }
            }
            return UInt16(bigEndian: address.sin_port)
        }
        return (one(), one())
    }

    @Test func datagramsAndTheErrorQueueOnSlots() async throws {
        let loop = try EventLoop(name: "udp-slab-test")
        let (serverPort, closedPort) = Self.freeUDPPorts()
        let seen = await withCheckedContinuation { (result: CheckedContinuation<[String], Never>) in
            loop.execute {
                let datagrams = Datagrams(loop: loop) { result.resume(returning: $0) }
                datagrams.start(serverPort: serverPort, closedPort: closedPort)
                Unmanaged.passUnretained(datagrams).retain()
            }
        }
        #expect(seen.contains("server got hello") && seen.contains("client got hello"), "\(seen)")
        #expect(seen.contains("error ECONNREFUSED from the closed port"), "\(seen)")
        loop.shutdown()
        #expect(loop.handlesLeftOpen == 0)
    }

    /// Reopens slot 0 from its `closed` callback (as a probe reuses a slot for the next port), twice, then lets
    /// the slab go: it must be freed, on whichever slab kind. Loop thread only.
    final class Reopener: TCPSlabDelegate, UDPSlabDelegate, @unchecked Sendable {
        var tcp: TCPSlab?, udp: UDPSlab?
        weak var watchedTCP: TCPSlab?, watchedUDP: UDPSlab?
        var rounds = 0
        let loop: EventLoop
        let done: @Sendable (Bool) -> Void

        init(loop: EventLoop, tcp: Bool, done: @escaping @Sendable (Bool) -> Void) {
            self.loop = loop
            self.done = done
            if tcp { self.tcp = TCPSlab(on: loop, capacity: 1); watchedTCP = self.tcp; self.tcp!.delegate = self }
            else { udp = UDPSlab(on: loop, capacity: 1); watchedUDP = udp; udp!.delegate = self }
        }

        func cycle() {
            if let tcp { _ = tcp.open(0); tcp.close(0) }
            if let udp { _ = udp.open(0); udp.close(0) }
        }

        private func closedOnce() {
            rounds += 1
            if rounds < 3 { return cycle() }
            tcp = nil
            udp = nil
            // The slab's own release comes after this callback returns: look on the next turn of the loop.
            loop.execute { [self] in done(watchedTCP == nil && watchedUDP == nil) }
        }

        func closed(_ slab: TCPSlab, _ slot: Int32) { closedOnce() }
        func closed(_ slab: UDPSlab, _ slot: Int32) { closedOnce() }
        func incomingConnection(_ slab: TCPSlab, _ slot: Int32, error: UVError?) {}
        func connected(_ slab: TCPSlab, _ slot: Int32, error: UVError?) {}
        func received(_ slab: TCPSlab, _ slot: Int32, _ bytes: ReceivedBytes) {}
        func readEnded(_ slab: TCPSlab, _ slot: Int32, error: UVError?) {}
        func received(_ slab: UDPSlab, _ slot: Int32, _ bytes: ReceivedBytes, from peer: DatagramPeer) {}
        func receiveFailed(_ slab: UDPSlab, _ slot: Int32, error: UVError) {}
    }

    @Test(arguments: [true, false]) func aSlotReopenedWhereItClosedStillLetsTheSlabGo(tcp: Bool) async throws {
        let loop = try EventLoop(name: "reopen-test")
        let freed = await withCheckedContinuation { (result: CheckedContinuation<Bool, Never>) in
            loop.execute {
                let reopener = Reopener(loop: loop, tcp: tcp) { result.resume(returning: $0) }
                reopener.cycle()
                Unmanaged.passUnretained(reopener).retain()
            }
        }
        #expect(freed, "the slab outlived its last close")
        loop.shutdown()
        #expect(loop.handlesLeftOpen == 0)
    }
}
