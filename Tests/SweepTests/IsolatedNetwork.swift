#if canImport(Glibc)
import Glibc
#endif
import Foundation
import UVLoop

/// Loops whose threads live in a network namespace of their own, with only loopback up. On Linux a namespace
/// belongs to a thread and a new thread inherits it from the thread that creates it: a group created on a thread
/// that has called unshare(CLONE_NEWNET) opens every socket there. A sweep over tens of thousands of ports on
/// those loops cannot take a port another test of this process picked as free. Needs root (CAP_SYS_ADMIN).
enum IsolatedNetwork {
    static var available: Bool { geteuid() == 0 }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// What the short-lived thread is given and hands back (it is joined before `result` is read).
    private final class Work: @unchecked Sendable {
        let loopCount: Int
        var result: Result<EventLoopGroup, any Error> = .failure(Failure(description: "thread did not run"))
        init(loopCount: Int) { self.loopCount = loopCount }
    }

    /// The group, created on a short-lived thread that moved to a new network namespace first.
    static func group(loopCount: Int) throws -> EventLoopGroup {
        let work = Work(loopCount: loopCount)
        var thread = pthread_t()
        let context = Unmanaged.passRetained(work).toOpaque()
        let started = pthread_create(&thread, nil, { context in
            let work = Unmanaged<Work>.fromOpaque(context!).takeRetainedValue()
            do {
                work.result = .success(try IsolatedNetwork.groupInNewNamespace(loopCount: work.loopCount))
            } catch {
                work.result = .failure(error)
            }
            return nil
        }, context)
        guard started == 0 else {
            Unmanaged<Work>.fromOpaque(context).release()
            throw Failure(description: "pthread_create: \(started)")
        }
        pthread_join(thread, nil)
        return try work.result.get()
    }

    /// On the calling thread (which it moves to a new namespace for good): loopback up, then the loops.
    private static func groupInNewNamespace(loopCount: Int) throws -> EventLoopGroup {
        guard try unshare(cloneNewNet) == 0 else {
            throw Failure(description: "unshare(CLONE_NEWNET): \(String(cString: strerror(errno)))")
        }
        // The thread's namespace, not the process's: the rest of the test process stays where it was.
        let mine = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self/ns/net")
        let process = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        guard let mine, mine != process else { throw Failure(description: "still in the process's namespace") }
        try bringLoopbackUp()
        return try EventLoopGroup(loopCount: loopCount)
    }

    private static let cloneNewNet: Int32 = 0x4000_0000  // CLONE_NEWNET (<sched.h>, behind _GNU_SOURCE)

    /// unshare(2), looked up in libc: Swift's Glibc module leaves out what needs _GNU_SOURCE.
    private static func unshare(_ flags: Int32) throws -> Int32 {
        typealias Unshare = @convention(c) (Int32) -> Int32
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "unshare") else { throw Failure(description: "no unshare in libc") }
        return unsafeBitCast(symbol, to: Unshare.self)(flags)
    }

    /// `ip link set lo up`, for the calling thread's namespace.
    private static func bringLoopbackUp() throws {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var request = ifreq()
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { name in
            for (i, byte) in "lo".utf8.enumerated() { name[i] = byte }
        }
        guard ioctl(fd, UInt(SIOCGIFFLAGS), &request) == 0 else {
            throw Failure(description: "SIOCGIFFLAGS lo: \(String(cString: strerror(errno)))")
        }
        request.ifr_ifru.ifru_flags |= Int16(IFF_UP)
        guard ioctl(fd, UInt(SIOCSIFFLAGS), &request) == 0 else {
            throw Failure(description: "SIOCSIFFLAGS lo: \(String(cString: strerror(errno)))")
        }
    }
}

/// Loops for sweep tests that need ports nobody else takes meanwhile: in a namespace of their own as root (a
/// parallel test's client socket can take a port picked as free in the process's namespace), else plain loops.
/// Sockets a test holds must then be made on one of these loops' threads (`onLoop`), to be in the same namespace.
enum TestLoops {
    static func group(loopCount: Int) throws -> EventLoopGroup {
        IsolatedNetwork.available ? try IsolatedNetwork.group(loopCount: loopCount) : try EventLoopGroup(loopCount: loopCount)
    }

    /// Runs `body` on `loop`'s thread (so in its network namespace).
    static func onLoop<T: Sendable>(_ loop: EventLoop, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T.self) { tasks in
            tasks.addTask(executorPreference: loop) { try body() }
            return try await tasks.next()!
        }
    }
}
