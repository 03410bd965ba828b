import ArgumentParser
import PortsweepSweep

/// `--rate`, `--order`, `--seed`: how a sweep paces itself on a real network.
struct PacingOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Port tests started per second at most, over all loops and both protocols (default: as fast as the window allows).", valueName: "N"))
    var rate: Double?

    @Option(name: .long, help: "The order ports are tried in: ascending, random (results are printed in port order either way).")
    var order: OrderArgument = .ascending

    @Option(name: .long, help: ArgumentHelp("Seed of --order random, to try the ports in the same order again (default: a new one, printed).", valueName: "N"))
    var seed: UInt64?

    enum OrderArgument: String, ExpressibleByArgument, CaseIterable {
        case ascending, random
    }

    func validate() throws {
        if let rate, !(rate.isFinite && rate >= 1 && rate <= 10_000_000) {
            throw ValidationError("invalid --rate '\(SweepCommand.text(rate))': must be from 1 to 10000000 ports per second")
        }
        if seed != nil && order != .random { throw ValidationError("--seed needs --order random") }
    }

    /// The order, with the seed drawn now when none was given.
    func portOrder() -> PortOrder {
        switch order {
        case .ascending: return .ascending
        case .random: return .random(seed: seed ?? UInt64.random(in: 1...UInt64(UInt32.max)))
        }
    }
}
