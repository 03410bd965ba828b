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
}
}
