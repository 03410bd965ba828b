import Foundation
import Testing

/// Runs a Python client (a script given inline); returns its stdout. `launcher` runs it elsewhere (a namespace).
func python(_ script: String, _ arguments: [String] = [], launcher: [String] = []) throws -> String {
    try Portsweep.shell(launcher + ["/usr/bin/python3", "-c", script] + arguments)
}

/// Resident memory now and at its peak (VmRSS, VmHWM) of a process, in MiB.
func memory(_ pid: Int32) -> (now: Int, peak: Int) {
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    func field(_ name: String) -> Int {
        let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
    }
    return (field("VmRSS"), field("VmHWM"))
}

extension EndToEnd {
/// `portsweep listen` against hostile clients and a hostile network: memory and time per client bounded, no
/// datagram it can be made to send at a third party, answers from the right address, every port it can hold.
@Suite struct ListenHardeningTests {
    /// Sends up to `total` bytes (echo: any bytes; http: pipelined GETs) and never reads; stops once the
    /// server has taken nothing for 2 s. Prints `sent=N`.
    static let flooder = #"""
    import socket, sys
    port, total, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(2)
    chunk = (b"x" * 65536) if kind == "echo" else (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 2400)
    sent = 0
    try:
        while sent < total:
            sent += s.send(chunk)
    except socket.timeout:
        pass
    print("sent=%d" % sent, flush=True)
    s.close()
    """#

    @Test(arguments: [("echo", 1 << 30), ("http", 256 << 20)])
    func aClientThatSendsAndNeverReadsCostsLittle(kind: String, total: Int) throws {
        let port = try HeldPort.freePort()
        let listener = try ListenProcess(["--ports", "\(port)", "--tcp-only", "--reply", kind, "--no-timestamps",
                                          "--idle-timeout", "3"])
        #expect(listener.waitForLog("listening on"))
        let pid = listener.process.processIdentifier
        let baseline = memory(pid).now
        let report = try python(Self.flooder, ["\(port)", "\(total)", kind])
        let sent = Int(report.split(separator: "=").last?.split(separator: "\n").first ?? "") ?? 0
        let peak = memory(pid).peak
        // The connection ends (idle: its peer reads nothing), and its buffers go.
        #expect(listener.waitForLog("TCP \(port) 127.0.0.1:", timeout: .seconds(15)), "\(listener.log)")
        let after = memory(pid).now
        print("\(kind): client sent \(sent) bytes unread; RSS \(baseline) MiB, peak \(peak), after \(after)")
        #expect(sent < total, "the client could send all \(total) bytes: nothing stopped reading")
        #expect(peak - baseline < 64, "peak RSS \(peak) MiB over a baseline of \(baseline) MiB")
        #expect(after - baseline < 16, "RSS \(after) MiB after the client left, baseline \(baseline) MiB")
        #expect(listener.stop() == 0)
        #expect(listener.errors.contains("reading paused for unread replies 1"), "summary: \(listener.errors)")
    }

    /// Opens `count` connections to `port` that send a request one byte every `interval` seconds, and meanwhile
    /// makes `normal` ordinary requests on the same port; prints `normal_ok=N slow_408=M slow_closed=K`.
    static let slowloris = #"""
    import socket, sys, time, selectors
    port, count, interval, normal, duration = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    request = b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
    slow = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port)); s.setblocking(False); slow.append([s, 0, b"", False])
    def trickle():
        for st in slow:
            if st[3]: continue
            try:
                st[0].send(request[st[1]:st[1] + 1]); st[1] += 1
            except OSError:
                st[3] = True
    def collect():
        for st in slow:
            if st[3]: continue
            try:
                data = st[0].recv(4096)
                if data: st[2] += data
                else: st[3] = True
            except BlockingIOError: pass
            except OSError: st[3] = True
    ok = 0
    start = time.time(); asked = 0; last = 0
    while time.time() - start < duration:
        if time.time() - last >= interval:
            trickle(); last = time.time()
        if asked < normal and time.time() - start > 0.5:
            c = socket.create_connection(("127.0.0.1", port)); c.settimeout(2)
            c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            answer = b""
            try:
                while True:
                    chunk = c.recv(4096)
                    if not chunk: break
                    answer += chunk
            except OSError: pass
            if b"200 OK" in answer: ok += 1
            c.close(); asked += 1
        collect(); time.sleep(0.05)
    collect()
    print("normal_ok=%d slow_408=%d slow_closed=%d" % (ok, sum(1 for st in slow if b" 408 " in st[2]),
          sum(1 for st in slow if st[3])), flush=True)
    """#

    @Test func aThousandTricklingConnectionsNeitherShutAPortNorLast() throws {
        let port = try HeldPort.freePort()
        let listener = try ListenProcess(["--ports", "\(port)", "--tcp-only", "--no-timestamps", "-q",
                                          "--request-timeout", "3"])
        #expect(listener.waitForLog("listening on"))
        // 1,000 connections (the per-port cap) each send a byte every 1.5 s: the idle timeout never fires.
        let report = try python(Self.slowloris, ["\(port)", "1000", "1.5", "20", "6"])
        print("slowloris: \(report)")
        let counts = Dictionary(uniqueKeysWithValues: report.split(separator: " ").compactMap { part -> (String, Int)? in
            let kv = part.split(separator: "=")
            return kv.count == 2 ? (String(kv[0]), Int(kv[1].trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1) : nil
        })
        #expect(counts["normal_ok"] == 20, "normal requests answered while 1,000 trickle: \(report)")
        // Within the 6 s every trickler was either evicted for a normal client or timed out (408).
        #expect(counts["slow_closed"] == 1000, "\(report)")
        #expect((counts["slow_408"] ?? 0) >= 900, "\(report)")
        #expect(listener.stop() == 0)
    }

    @Test func aCapEvictsTheLeastRecentlyActiveConnection() throws {
        let port = try HeldPort.freePort()
        let listener = try ListenProcess(["--ports", "\(port)", "--tcp-only", "--idle-timeout", "0.5", "--max-per-port", "1"])
        #expect(listener.waitForLog("listening on"))
        let first = try Net.connect(port)
        Net.send(first, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(Net.receive(first, atLeast: 10).contains("200 OK"))
        // Over the per-port cap: the idle keep-alive connection makes room, the new one is served.
        let second = try Net.connect(port)
        Net.send(second, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        #expect(Net.receive(second, atLeast: 1 << 20).contains("200 OK"))
        close(second)
        #expect(Net.receive(first, atLeast: 1).isEmpty)  // closed by the server
        close(first)
        #expect(listener.waitForLog("evicted (per-port connection cap)"))
        let third = try Net.connect(port)
        #expect(listener.waitForLog("idle timeout", timeout: .seconds(10)))
        close(third)
        #expect(listener.stop() == 0)
        #expect(listener.errors.contains("evicted 1"), "summary: \(listener.errors)")
    }

    /// Opens one idle connection to each port given, then prints how many the server left open after 1 s.
    static let spread = #"""
    import socket, sys, time
    held = []
    for port in sys.argv[1:]:
        s = socket.create_connection(("127.0.0.1", int(port))); held.append(s); time.sleep(0.002)
    time.sleep(1)
    alive = 0
    for s in held:
        s.setblocking(False)
        try:
            if s.recv(1) == b"": continue
        except BlockingIOError: pass
        except OSError: continue
        alive += 1
    print("alive=%d" % alive, flush=True)
    """#

    @Test(.enabled(if: Portsweep.canMakeNamespaces, "needs root and unshare"))
    func maxConnectionsIsOneCapOverEveryWorkerProcess() throws {
        // 300 descriptors per process: 1,000 ports take several workers; 200 connections over all of them,
        // client and listener in one namespace of their own.
        let script = """
            ip link set lo up
            /usr/bin/prlimit --nofile=300:300 \(Portsweep.binary) listen --ports 41000-41999 --tcp-only --no-timestamps --max-connections 50 > /tmp/cap-$$.log 2>&1 &
            pid=$!
            until grep -q "listening on" /tmp/cap-$$.log; do sleep 0.05; done
            /usr/bin/python3 -c '\(Self.spread)' $(seq 41000 5 41995)
            kill -TERM $pid; wait $pid
            cat /tmp/cap-$$.log; rm -f /tmp/cap-$$.log
            """
        let out = try Portsweep.shell(["/usr/bin/unshare", "-n", "/bin/sh", "-c", script])
        #expect(out.contains("worker processes"), "\(out)")
        #expect(out.contains("alive=50"), "200 connections over every worker, cap 50: \(out)")
        // The other 150 either made room (evicted, where their process had a connection to spare) or were refused.
        #expect(out.contains("limits: "), "\(out)")
    }

    /// One UDP datagram with a forged source, through a raw socket (root): `SRC_IP SRC_PORT DST_IP DST_PORT TEXT`.
    static let spoof = #"""
    import socket, struct, sys
    src, sport, dst, dport, text = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5].encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    udp = struct.pack("!HHHH", sport, dport, 8 + len(text), 0) + text
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    s.sendto(ip + udp, (dst, 0))
    """#

    @Test(.enabled(if: TestNetwork.available, "needs root and ip"), arguments: ["echo", "http"])
    func aSpoofedDatagramFromItsOwnPortStartsNoLoop(reply: String) throws {
        try TestNetwork.with(.loopback) { network in
            let inside = ["/usr/sbin/ip", "netns", "exec", network.near]
            let listener = try ListenProcess(["--ports", "45000-45001", "--udp-only", "--reply", reply, "--no-timestamps"],
                                             launcher: inside)
            #expect(listener.waitForLog("listening on"))
            // "From" 45000 to 45001, both this listen's: answering would start a ping-pong between them.
            _ = try python(Self.spoof, ["127.0.0.1", "45000", "127.0.0.1", "45001", "ping from a forged source"],
                           launcher: inside)
            #expect(listener.waitForLog("UDP 45001 127.0.0.1:45000"))
            // Watch for a second: with no answer the traffic stops at the one datagram.
            let watch = ContinuousClock.now + .seconds(1)
            while ContinuousClock.now < watch { usleep(50_000) }
            let datagrams = listener.logLines.filter { $0.hasPrefix("UDP ") }
            print("\(reply): datagrams logged in the second after one forged datagram: \(datagrams.count)")
            #expect(datagrams.count == 1, "\(datagrams.prefix(5))")
            #expect(datagrams.first?.hasSuffix("out=0 no reply: from a port this listen holds") == true, "\(datagrams)")
            // From a reflector's port (chargen): no answer either.
            _ = try python(Self.spoof, ["127.0.0.1", "19", "127.0.0.1", "45000", "x"], launcher: inside)
            #expect(listener.waitForLog("UDP 45000 127.0.0.1:19 in=1 out=0 no reply: from a reflector port"))
            #expect(listener.stop() == 0)
            #expect(listener.errors.contains("UDP not answered 1 (from a port this listen holds)"), "\(listener.errors)")
        }
    }

    /// Sends `count` datagrams of `size` bytes to HOST:PORT from one socket and prints how many answers came
    /// back within a second after the last, and their total size.
    static let burst = #"""
    import socket, sys, time
    host, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    for _ in range(count): s.sendto(b"q" * size, (host, port))
    answers, total = 0, 0
    try:
        while True:
            answers += 1; total += len(s.recv(4096))
    except socket.timeout:
        answers -= 1
    print("answers=%d bytes=%d" % (answers, total), flush=True)
    """#

    @Test(.enabled(if: TestNetwork.available, "needs root, ip and nft"))
    func answersAreNoLargerThanTheQuestionAndRateLimitedPerSource() throws {
        try TestNetwork.with(.veth) { network in
            let near = ["/usr/sbin/ip", "netns", "exec", network.near], far = ["/usr/sbin/ip", "netns", "exec", network.far!]
            let limited = try ListenProcess(["--ports", "45010", "--udp-only", "--no-timestamps"], launcher: near)
            #expect(limited.waitForLog("listening on"))
            // http: an answer is cut to the question's size; a 0-byte question gets nothing.
            let small = try python(Self.burst, [TestNetwork.nearAddress, "45010", "1", "1"], launcher: far)
            #expect(small.hasPrefix("answers=1 bytes=1"), "\(small)")
            let empty = try python(Self.burst, [TestNetwork.nearAddress, "45010", "1", "0"], launcher: far)
            #expect(empty.hasPrefix("answers=0"), "\(empty)")
            // 200 questions at once from one outside address: 50 answers (the default budget per source).
            let flood = try python(Self.burst, [TestNetwork.nearAddress, "45010", "200", "64"], launcher: far)
            print("200 datagrams from one source, default rate: \(flood)")
            let answers = Int(flood.split(separator: " ").first?.split(separator: "=").last ?? "") ?? -1
            #expect((50...55).contains(answers), "\(flood)")
            #expect(limited.stop() == 0)
            #expect(limited.errors.contains("(rate limit of its source)"), "\(limited.errors)")
            #expect(limited.errors.contains("UDP answers cut to the question"), "\(limited.errors)")
            // Raised for a remote sweep: every one answered.
            let open = try ListenProcess(["--ports", "45010", "--udp-only", "--reply", "echo", "-q", "--udp-reply-rate", "0"],
                                         launcher: near)
            #expect(open.waitForLog("listening on"))
            let all = try python(Self.burst, [TestNetwork.nearAddress, "45010", "200", "64"], launcher: far)
            #expect(all.hasPrefix("answers=200 bytes=12800"), "\(all)")
            #expect(open.stop() == 0)
        }
    }

    /// Sends a datagram from a socket bound to SOURCE and connected to TARGET:PORT; prints `reply N` or `none`.
    static let connectedClient = #"""
    import socket, sys
    target, source, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.bind((source, 0)); s.connect((target, port))
    s.send(b"a question long enough for the whole http answer to fit in......................................")
    try: print("reply %d" % len(s.recv(2048)))
    except socket.timeout: print("none")
    """#

    @Test(.enabled(if: TestNetwork.available, "needs root and ip"), arguments: ["0.0.0.0", "::"])
    func udpAnswersComeFromTheAddressTheQuestionWasSentTo(bind: String) throws {
        try TestNetwork.with(.loopback) { network in
            let inside = ["/usr/sbin/ip", "netns", "exec", network.near]
            // A second address on the host: questions to it are answered from it, or a connected client drops
            // the answer (the kernel would pick 127.0.0.1, its route back to the client).
            _ = try Portsweep.shell(inside + ["/bin/sh", "-c",
                "ip addr add 198.18.9.2/32 dev lo && ip -6 addr add fd00::2/128 dev lo nodad && ip -6 addr add fd00::3/128 dev lo nodad"])
            let listener = try ListenProcess(["--ports", "45020", "--udp-only", "--bind", bind, "--no-timestamps", "-q"],
                                             launcher: inside)
            #expect(listener.waitForLog("listening on"))
            let v4 = try python(Self.connectedClient, ["198.18.9.2", "127.0.0.1", "45020"], launcher: inside)
            #expect(v4.hasPrefix("reply "), "IPv4, bound to \(bind): \(v4)")
            if bind == "::" {
                let v6 = try python(Self.connectedClient, ["fd00::2", "fd00::3", "45020"], launcher: inside)
                #expect(v6.hasPrefix("reply "), "IPv6: \(v6)")
            }
            #expect(listener.stop() == 0)
        }
    }

    /// Runs a command in the network namespace of process `pid`.
    static func inNamespace(of pid: Int32, _ command: [String]) throws -> String {
        try Portsweep.shell(["/usr/bin/nsenter", "--net=/proc/\(pid)/ns/net"] + command)
    }

    @Test(.enabled(if: Portsweep.canMakeNamespaces, "needs root and unshare"))
    func aWorkerThatDiesIsReportedAndReplacedAndItsCountsKept() throws {
        let listener = try ListenProcess(["--ports", "41000-41999", "--tcp-only", "--no-timestamps"],
                                         launcher: ["/usr/bin/unshare", "-n", "/bin/sh", "-c",
                                                    "ip link set lo up && exec /usr/bin/prlimit --nofile=300:300 \"$@\"", "sh"])
        #expect(listener.waitForLog("worker processes"), "\(listener.log) \(listener.errors)")
        let pid = listener.process.processIdentifier
        func get() -> String { (try? Self.inNamespace(of: pid, ["/usr/bin/curl", "-s", "--max-time", "1", "http://127.0.0.1:41000/"])) ?? "" }
        for _ in 0..<3 { #expect(get().hasPrefix("Port test successful!")) }
        // All three logged (each connection's record comes from the worker, through the parent) before the kill.
        let logged = ContinuousClock.now + .seconds(10)
        while listener.logLines.filter({ $0.hasPrefix("TCP 41000 ") }).count < 3 && ContinuousClock.now < logged { usleep(5_000) }
        // The worker holding port 41000.
        let socket = try Self.inNamespace(of: pid, ["/usr/bin/ss", "-ltnpH", "sport = :41000"])
        let holder = try #require(socket.range(of: #"pid=\d+"#, options: .regularExpression).flatMap { Int32(socket[$0].dropFirst(4)) },
                                  "\(socket)")
        let killed = ContinuousClock.now
        kill(holder, SIGKILL)
        #expect(listener.waitForLog("killed by SIGKILL; a new worker takes over its ports"), "\(listener.log)")
        var answered = false
        while !answered && ContinuousClock.now - killed < .seconds(20) { answered = get().hasPrefix("Port test successful!") }
        let downtime = ContinuousClock.now - killed
        print("worker SIGKILL to its ports answering again: \(downtime)")
        #expect(answered && downtime < .seconds(10))
        #expect(listener.waitForLog("listening again"))
        #expect(listener.stop() == 0)
        // The three connections the dead worker logged are still in the statistics.
        let summary = listener.errors
        let connections = summary.range(of: #"\d+ connections"#, options: .regularExpression).flatMap { Int(summary[$0].split(separator: " ")[0]) } ?? 0
        #expect(connections >= 4, "\(summary) \(listener.log)")
        #expect(summary.contains("workers replaced 1"), "\(summary)")
    }

    @Test func aRangeServesEveryPortItCanAndNamesWhoHoldsTheOthers() throws {
        let held = try HeldPort()
        defer { held.close() }
        let spec = "\(held.port - 1)-\(held.port + 1)"
        let listener = try ListenProcess(["--ports", spec, "--tcp-only", "--no-timestamps"])
        #expect(listener.waitForLog("listening on 3 TCP ports"), "\(listener.log) \(listener.errors)")
        #expect(listener.log.contains("1 of 3 could not be held"), "\(listener.log)")
        #expect(listener.waitForErrors("cannot listen on TCP port \(held.port) of 0.0.0.0: in use (held by "), "\(listener.errors)")
        #expect(listener.errors.contains("pid \(getpid()))"), "\(listener.errors)")
        #expect(try Net.curl(["http://127.0.0.1:\(held.port + 1)/"]).hasPrefix("Port test successful!"))
        #expect(listener.stop() == 0)
        let strict = try Portsweep.run(["listen", "--ports", spec, "--tcp-only", "--strict"])
        #expect(strict.status == 2 && strict.stdout.isEmpty, "\(strict.stderr)")
    }

    /// Leaves port `PORT` in TIME-WAIT on 127.0.0.1, from a client that did not set SO_REUSEADDR; prints the
    /// peer it was connected to.
    static let timeWait = #"""
    import socket, sys, time
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    c = socket.socket(); c.bind(("127.0.0.1", int(sys.argv[1]))); c.connect(srv.getsockname())
    a, _ = srv.accept(); c.close(); time.sleep(0.2); a.close()
    print("127.0.0.1:%d" % srv.getsockname()[1])
    """#

    @Test(.enabled(if: Portsweep.canMakeNamespaces, "needs root and unshare"))
    func aPortInTimeWaitIsSaidToBeOneNotAProcess() throws {
        let script = """
            ip link set lo up
            peer=$(/usr/bin/python3 -c '\(Self.timeWait)' 42424)
            echo "peer=$peer"
            \(Portsweep.binary) listen --ports 42424 --tcp-only 2>&1
            echo "status=$?"
            """
        let out = try Portsweep.shell(["/usr/bin/unshare", "-n", "/bin/sh", "-c", script])
        let peer = out.split(separator: "\n").first { $0.hasPrefix("peer=") }.map { String($0.dropFirst(5)) } ?? "?"
        #expect(out.contains("cannot listen on TCP port 42424 of 0.0.0.0: in use (TIME-WAIT of \(peer))"), "\(out)")
        #expect(out.contains("status=2"), "\(out)")
    }

    @Test func logLinesCarryTheTimeOfTheirEventAndTheJSONLogEndsWithTheCounters() throws {
        let port = try HeldPort.freePort()
        let listener = try ListenProcess(["--ports", "\(port)", "--tcp-only", "--format", "json", "--max-per-port", "1"])
        #expect(listener.waitForLog("listening on"))
        let fd = try Net.connect(port)
        Net.send(fd, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        _ = Net.receive(fd, atLeast: 10)
        usleep(300_000)  // the connection's life: its line is stamped when it ends, not when it began
        let closedAt = Date()
        close(fd)
        #expect(listener.waitForLog("\"event\":\"connection\""))
        let seen = Date()
        let second = try Net.connect(port)  // over the cap of 1: the first is evicted... it is closed already
        close(second)
        #expect(listener.stop() == 0)
        let records = listener.logLines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let connection = try #require(records.first { $0["event"] as? String == "connection" })
        let stamp = try #require((connection["time"] as? String).flatMap { try? Date($0, strategy: .iso8601) })
        #expect(abs(stamp.timeIntervalSince(closedAt)) < 0.1, "stamped \(stamp), closed \(closedAt)")
        #expect(seen.timeIntervalSince(closedAt) < 1, "written \(seen.timeIntervalSince(closedAt)) s after the event")
        let summary = try #require(records.last, "\(listener.log)")
        #expect(summary["event"] as? String == "summary", "\(summary)")
        #expect(summary["connections"] as? Int == 2)
        #expect((summary["limits"] as? [String: Any])?["connections"] is [String: Any], "\(summary)")
    }
}
}
