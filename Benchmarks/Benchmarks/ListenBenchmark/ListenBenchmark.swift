import Benchmark
import Foundation
import LoadTools
import PortsweepEngine
import PortsweepListen
import UVLoop

/// Listen mode through its public API, in process: how fast a whole range of listeners opens, and HTTP replies
/// per second under wrk next to nginx (one worker) in the same run. Run through ./run (a fresh network namespace).
// Names have no spaces or slashes: `thresholds update` writes them with underscores but `thresholds check`
// looks for the name as written (ordo-one/benchmark#301, #373), so only such names are found again.
let benchmarks: @Sendable () -> Void = {
    signal(SIGPIPE, SIG_IGN)
    let budget = DescriptorBudget.raise()
    let group = try! EventLoopGroup()
    let portsPerSecond = BenchmarkMetric.custom("ports/s", polarity: .prefersLarger, useScalingFactor: false)
    let requestsPerSecond = BenchmarkMetric.custom("requests/s", polarity: .prefersLarger, useScalingFactor: false)

    // As many listeners as one process may hold, up to 60,000: as root with CAP_SYS_RESOURCE, DescriptorBudget
    // raises the hard limit to fs.nr_open; without it (this machine: 20,000), the CLI spreads a larger range over
    // worker processes (Benchmarks/listen-http measures that path).
    let count = min(60_000, ListenWorkers.portsPerProcess(descriptors: budget, transports: 1))
    let range = try! PortSet(parsing: "1024-\(1023 + count)")
    Benchmark("listen:_open_\(count)_TCP_listeners_(\(range))_and_close_them",
              configuration: .init(metrics: [.wallClock, portsPerSecond], units: [portsPerSecond: .count],
                                   warmupIterations: 1, maxDuration: .seconds(30), maxIterations: 10).withTolerances) { benchmark in
        let listener = Listen(ListenConfiguration(ports: range, bind: .loopbackV4, transports: [.tcp]), group: group,
                              descriptors: budget)
        let start = ContinuousClock.now
        benchmark.startMeasurement()
        let opened = try await listener.start()
        precondition(opened.failures.isEmpty && opened.workers == 0, "not every listener opened in this process: \(opened.failures.prefix(3))")
        benchmark.stopMeasurement()
        let elapsed = ContinuousClock.now - start
        benchmark.measurement(portsPerSecond, Int(Double(range.count) / (elapsed / .seconds(1))))
        await listener.stop()
        for await _ in listener.events {}
    }

    // The command itself on the 60,000-port range: one process holds what its descriptor limit allows,
    // the rest go to worker processes, and "listening on" is printed once every listener of every worker is up.
    if let binary = PortsweepBinary.path {
        Benchmark("listen_(command):_60,000_TCP_listeners_(1024-61023)_until_\"listening_on\"",
                  configuration: .init(metrics: [.wallClock, portsPerSecond], units: [portsPerSecond: .count],
                                       warmupIterations: 1, maxDuration: .seconds(60), maxIterations: 5).withTolerances) { benchmark in
            let start = ContinuousClock.now
            benchmark.startMeasurement()
            let process = try await Tool.start(path: binary, ["listen", "--ports", "1024-61023", "--tcp-only", "-q",
                                                             "--no-timestamps"], until: "listening on")
            benchmark.stopMeasurement()
            let elapsed = ContinuousClock.now - start
            benchmark.measurement(portsPerSecond, Int(60_000 / (elapsed / .seconds(1))))
            process.terminate()
            process.waitUntilExit()
            precondition(process.terminationStatus == 0, "portsweep listen exited with \(process.terminationStatus)")
        }
    } else {
        FileHandle.standardError.write(Data("listen: no release build of portsweep (swift build -c release in ..)\n".utf8))
    }

    // The command, like nginx, in a process of its own: in this one the benchmark's malloc interposer would
    // count (and slow) every allocation of the server but not of nginx.
    if let binary = PortsweepBinary.path {
        Benchmark("listen_(command):_HTTP_replies_on_one_port,_wrk_100_connections_keep-alive",
                  configuration: .init(metrics: [requestsPerSecond], units: [requestsPerSecond: .count],
                                       warmupIterations: 0, maxDuration: .seconds(60), maxIterations: 3,
                                       skip: !Wrk.isInstalled).withTolerances) { benchmark in
            let port = FreePort.tcp()
            let process = try await Tool.start(path: binary, ["listen", "--ports", "\(port)", "--bind", "127.0.0.1",
                                                             "--tcp-only", "-q", "--no-timestamps"], until: "listening on")
            let result = try await Wrk.run(url: "http://127.0.0.1:\(port)/", connections: 100, seconds: 5)
            process.terminate()
            process.waitUntilExit()
            precondition(result.non2xx == 0 && result.socketErrors == 0, "wrk saw errors: \(result)")
            benchmark.measurement(requestsPerSecond, Int(result.requestsPerSecond))
        }
    }

    Benchmark("reference:_nginx_(one_worker)_returning_200,_same_wrk_load",
              configuration: .init(metrics: [requestsPerSecond], units: [requestsPerSecond: .count], warmupIterations: 0, maxDuration: .seconds(60),
                                   maxIterations: 3, skip: !Wrk.isInstalled || Tool.find("nginx") == nil).withTolerances) { benchmark in
        let nginx = try Nginx.start()
        defer { nginx.stop() }
        let result = try await Wrk.run(url: "http://127.0.0.1:\(nginx.port)/", connections: 100, seconds: 5)
        precondition(result.non2xx == 0 && result.socketErrors == 0, "wrk saw errors: \(result)")
        benchmark.measurement(requestsPerSecond, Int(result.requestsPerSecond))
    }
}

/// nginx with one worker and no logging, answering every request with a short 200, from a scratch directory.
struct Nginx {
    let process: Process
    let directory: URL
    let port: UInt16

    static func start() throws -> Nginx {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("portsweep-nginx-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let port = FreePort.tcp()
        let configuration = """
            worker_processes 1;
            pid \(directory.path)/nginx.pid;
            error_log \(directory.path)/error.log;
            events { worker_connections 4096; }
            http {
              access_log off;
              server {
                listen 127.0.0.1:\(port);
                location / { default_type text/plain; return 200 "Port test successful!\\n"; }
              }
            }
            """
        let file = directory.appendingPathComponent("nginx.conf")
        try configuration.write(to: file, atomically: true, encoding: .utf8)
        let process = try Tool.start("nginx", ["-c", file.path, "-g", "daemon off;"])
        // Ready when it accepts a connection; bounded, so a broken nginx fails the benchmark instead of hanging it.
        for _ in 0..<500 {
            if Self.accepts(port) { return Nginx(process: process, directory: directory, port: port) }
            usleep(10_000)
        }
        process.terminate()
        throw LoadToolError.failed("nginx", status: -1, output: "not listening on \(port) after 5 s")
    }

    static func accepts(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// The release build of the parent package's command (Benchmarks/run builds it), or $PORTSWEEP_BINARY.
enum PortsweepBinary {
    static var path: String? {
        let candidates = [ProcessInfo.processInfo.environment["PORTSWEEP_BINARY"], "../.build/release/portsweep",
                          ".build/release/portsweep"].compactMap { $0 }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
            .map { URL(fileURLWithPath: $0).standardizedFileURL.path }
    }
}
