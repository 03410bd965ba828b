import ArgumentParser
import PortsweepEngine
import UVLoop

/// What a command needs of this machine before it can do anything, and the one line that says why it cannot.
enum LocalResources {
    /// One loop per core. Out of descriptors (each loop needs an epoll instance and an eventfd) is a local
    /// problem: one line naming RLIMIT_NOFILE, exit status 2.
    static func loops(_ count: Int = EventLoopGroup.coreCount) throws -> EventLoopGroup {
        do {
            return try EventLoopGroup(loopCount: count)
        } catch {
            Terminal.error("portsweep: cannot start: \(error.name) opening the event loops; \(descriptorLimit())\n")
            throw ExitCode(ExitStatus.localError)
        }
    }

    /// `RLIMIT_NOFILE is 16 (hard 16) with 9 open; raise it (ulimit -n) to run`
    static func descriptorLimit() -> String {
        let budget = DescriptorBudget.current()
        return "RLIMIT_NOFILE is \(budget.soft) (hard \(budget.hard)) with \(budget.inUse) open; raise it (ulimit -n) to run"
    }
}
