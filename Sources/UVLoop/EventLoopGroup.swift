import CLibUV
import Synchronization

/// A fixed set of loops, one per core by default, each on its own thread.
public final class EventLoopGroup: Sendable {
    public let loops: [EventLoop]
    private let cursor = Atomic<Int>(0)

    /// The number of cores this process may run on.
    public static var coreCount: Int { Int(uv_available_parallelism()) }

    public init(loopCount: Int = EventLoopGroup.coreCount) {
        precondition(loopCount > 0, "an EventLoopGroup needs at least one loop")
        loops = (0..<loopCount).map { EventLoop(name: "portsweep-\($0)") }
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
