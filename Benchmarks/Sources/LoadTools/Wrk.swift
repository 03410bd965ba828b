import Foundation

/// What one `wrk` run measured.
public struct WrkResult: Sendable {
    public var requestsPerSecond: Double
    public var requests: Int
    /// Responses with a status outside 2xx/3xx.
    public var non2xx: Int
    /// Connect, read, write and timeout errors together.
    public var socketErrors: Int
}

public enum LoadToolError: Error, CustomStringConvertible {
    case missing(String)
    case failed(String, status: Int32, output: String)

    public var description: String {
        switch self {
        case .missing(let tool): return "\(tool) is not installed (apt-get install -y \(tool))"
        case .failed(let tool, let status, let output): return "\(tool) exited with \(status): \(output)"
        }
    }
}

/// wrk (keep-alive HTTP/1.1 load) against one URL, run as a child process.
public enum Wrk {
    public static var isInstalled: Bool { Tool.find("wrk") != nil }

    /// `script`: Lua for wrk's `-s` (a `request` function, say), written to a temporary file for the run.
    public static func run(url: String, threads: Int = 2, connections: Int = 100, seconds: Int = 5,
                           script: String? = nil) async throws -> WrkResult {
        var arguments = ["-t\(threads)", "-c\(connections)", "-d\(seconds)s"]
        var file: URL?
        if let script {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("wrk-\(UUID().uuidString).lua")
            try script.write(to: path, atomically: true, encoding: .utf8)
            arguments += ["-s", path.path]
            file = path
        }
        defer { if let file { try? FileManager.default.removeItem(at: file) } }
        let output = try await Tool.run("wrk", arguments + [url])
        return try parse(output)
    }

    static func parse(_ output: String) throws -> WrkResult {
        var result = WrkResult(requestsPerSecond: 0, requests: 0, non2xx: 0, socketErrors: 0)
        for line in output.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
            if line.hasPrefix("Requests/sec:"), words.count >= 2 {
                result.requestsPerSecond = Double(words[1]) ?? 0
            } else if line.contains("requests in"), let n = Int(words[0]) {
                result.requests = n
            } else if line.hasPrefix("Non-2xx or 3xx responses:"), let n = Int(words.last ?? "") {
                result.non2xx = n
            } else if line.hasPrefix("Socket errors:") {
                result.socketErrors = words.compactMap(Int.init).reduce(0, +)
            }
        }
        guard result.requests > 0 else { throw LoadToolError.failed("wrk", status: 0, output: output) }
        return result
    }
}

/// Child processes of the benchmarks: found on PATH, run to completion, output returned.
public enum Tool {
    public static func find(_ name: String) -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        for directory in path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"] {
            let url = URL(fileURLWithPath: directory).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return nil
    }

    /// Runs a child to completion on a thread of its own: waiting for it must not hold one of the few threads of
    /// Swift's cooperative pool, which the code being measured may need.
    @discardableResult
    public static func run(_ name: String, _ arguments: [String], input: String? = nil) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try runBlocking(name, arguments, input: input) })
            }
        }
    }

    static func runBlocking(_ name: String, _ arguments: [String], input: String?) throws -> String {
        guard let url = find(name) else { throw LoadToolError.missing(name) }
        let process = Process()
        process.executableURL = url
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        let stdin = Pipe()
        if input != nil { process.standardInput = stdin }
        try process.run()
        if let input {
            stdin.fileHandleForWriting.write(Data(input.utf8))
            try stdin.fileHandleForWriting.close()
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw LoadToolError.failed(name, status: process.terminationStatus, output: text)
        }
        return text
    }

    /// Starts `path` and returns once a line of its output (stdout or stderr) contains `text`; throws if it ends
    /// first or `timeout` passes. The caller stops it (`terminate()`, `waitUntilExit()`).
    public static func start(path: String, _ arguments: [String], until text: String,
                             timeout: Duration = .seconds(60)) async throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let seen: Bool = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                var printed = ""
                let deadline = ContinuousClock.now + timeout
                // availableData blocks: the deadline is checked between chunks, and a child that stops writing
                // is ended by the caller's timeout below.
                while ContinuousClock.now < deadline {
                    let data = output.fileHandleForReading.availableData
                    if data.isEmpty { break }
                    printed += String(decoding: data, as: UTF8.self)
                    if printed.contains(text) { return continuation.resume(returning: true) }
                }
                continuation.resume(returning: false)
            }
        }
        guard seen else {
            if process.isRunning { process.terminate() }
            throw LoadToolError.failed(path, status: -1, output: "never printed \"\(text)\"")
        }
        // Keep draining, so a chatty child never blocks on a full pipe.
        Thread.detachNewThread { while !output.fileHandleForReading.availableData.isEmpty {} }
        return process
    }

    /// Starts a long-running child (a reference server); the caller terminates it.
    public static func start(_ name: String, _ arguments: [String]) throws -> Process {
        guard let url = find(name) else { throw LoadToolError.missing(name) }
        let process = Process()
        process.executableURL = url
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }
}
