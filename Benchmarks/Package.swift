// swift-tools-version: 6.1
//
// Benchmarks of portsweep, apart from the main package so that building and testing portsweep never pulls in the
// benchmark harness. Run with ./run (a fresh network namespace, the C yardstick beside it).
import PackageDescription

let package = Package(
    name: "portsweep-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "portsweep", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "SweepBenchmark",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "PortsweepSweep", package: "portsweep"),
                .product(name: "UVLoop", package: "portsweep"),
            ],
            path: "Benchmarks/SweepBenchmark",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
    ]
)
