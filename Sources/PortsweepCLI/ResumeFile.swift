import Foundation
import PortsweepEngine
import PortsweepReport
#if canImport(Glibc)
import Glibc
#endif

/// `--resume FILE`: the verdicts of an earlier run, read from its JSON Lines, and every new verdict appended
/// to the same file (one record per port, written in chunks of 32 KiB and at the end: a kill loses at most the
/// last chunk, whose ports are then tested again), so that an interrupted run can be resumed again. The sweep's own output is the whole range's, as if it had never been interrupted.
final class ResumeFile {
    let path: String
    /// The earlier run's verdicts (all of them; the sweep uses those of its ports and protocols).
    let known: [PortResult]
    private let knownKeys: Set<Int>
    private let descriptor: Int32
    private var renderer = ResultRenderer(options: RenderOptions(format: .json, grouped: false))
    private var pending = ""
    /// The errno of a write that failed (the disk is full, say): the command says so and exits 2.
    private(set) var writeFailure: Int32?

    /// Why the file cannot be used: bad usage (64) for a file that is not ours, a local error (2) for one that
    /// cannot be opened.
    enum Failure: Error, CustomStringConvertible {
        case notResults(path: String, ResultLog.BadLine)
        case cannotOpen(path: String, errno: Int32)
        case cannotWrite(path: String, errno: Int32)
        var description: String {
            switch self {
            case .notResults(let path, let bad): "--resume \(path) is not an earlier sweep's JSON Lines: \(bad)"
            case .cannotOpen(let path, let errno): "--resume \(path): cannot open it: \(String(cString: strerror(errno)))"
            case .cannotWrite(let path, let errno): "--resume \(path): cannot write to it: \(String(cString: strerror(errno)))"
            }
        }
    }

    /// Reads what `path` holds (nothing when it does not exist yet) and opens it for appending.
    init(path: String) throws(Failure) {
        self.path = path
        var text = ""
        if FileManager.default.fileExists(atPath: path) {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw .cannotOpen(path: path, errno: EACCES)
            }
            text = String(decoding: data, as: UTF8.self)
        }
        do { known = try ResultLog.read(text) } catch { throw .notResults(path: path, error) }
        knownKeys = Set(known.map(ResumeFile.key))
        descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw .cannotOpen(path: path, errno: errno) }
        // A last line cut short by a kill would glue itself to the first new record.
        if let last = text.utf8.last, last != UInt8(ascii: "\n") { write(text: "\n") }
    }

    deinit { close(descriptor) }

    private static func key(_ result: PortResult) -> Int { Int(result.port) << 1 | (result.transport == .tcp ? 0 : 1) }

    /// Records a result of this run (results read from the file are not written again).
    func add(_ result: PortResult) {
        guard !knownKeys.contains(ResumeFile.key(result)) else { return }
        for line in renderer.add(result) {
            pending += line
            pending += "\n"
        }
        if pending.utf8.count > 1 << 15 { flush() }
    }

    /// Writes what is pending (and at the end).
    func flush() {
        guard !pending.isEmpty else { return }
        write(text: pending)
        pending = ""
    }

    private func write(text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(descriptor, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                writeFailure = writeFailure ?? (n < 0 ? errno : EIO)
                return
            }
            offset += n
        }
        bytes.removeAll()
    }
}
