import CLibUV
import Synchronization

/// A fixed set of loops, one per core by default, each on its own thread.
public final class EventLoopGroup: Sendable {
    public let loops: [EventLoop]
    private let cursor = Atomic<Int>(0)

    /// The number of cores this process may run on.
    public static var coreCount: Int { Int(uv_available_parallelism()) }

    /// Starts `loopCount` loops. Throws (with the loops already started shut down again) when the process is out
    /// of descriptors or threads: each loop holds an epoll instance and an eventfd.
    public init(loopCount: Int = EventLoopGroup.coreCount) throws(UVError) {
        precondition(loopCount > 0, "an EventLoopGroup needs at least one loop")
        var loops: [EventLoop] = []
        for index in 0..<loopCount {
            do {
                loops.append(try EventLoop(name: "portsweep-\(index)"))
            } catch {
                for loop in loops { loop.shutdown() }
                throw error
            }
        }
        self.loops = loops
    }

    /// Round-robin choice of a loop.
    public func next() -> EventLoop {
        loops[cursor.wrappingAdd(1, ordering: .relaxed).oldValue % loops.count]
    }

    /// Stops every loop. Not from one of the group's own threads.
    public func shutdown() {
        for loop in loops { loop.shutdown() }
    }
}
