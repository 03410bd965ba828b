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
        // What the benchmarks drive from outside (wrk, nft, a plain HTTP GET, a free port) and their tolerances.
        .target(
            name: "LoadTools",
            dependencies: [.product(name: "UVLoop", package: "portsweep"), .product(name: "Benchmark", package: "benchmark")],
            path: "Sources/LoadTools"),
        .executableTarget(
            name: "SweepBenchmark",
            dependencies: [
                "LoadTools",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "PortsweepSweep", package: "portsweep"),
                .product(name: "UVLoop", package: "portsweep"),
            ],
            path: "Benchmarks/SweepBenchmark",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
        .executableTarget(
            name: "ServeBenchmark",
            dependencies: [
                "LoadTools",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "PortsweepServe", package: "portsweep"),
                .product(name: "PortsweepHTTP", package: "portsweep"),
                .product(name: "PortsweepListen", package: "portsweep"),
                .product(name: "UVLoop", package: "portsweep"),
            ],
            path: "Benchmarks/ServeBenchmark",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
        .executableTarget(
            name: "ListenBenchmark",
            dependencies: [
                "LoadTools",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "PortsweepListen", package: "portsweep"),
                .product(name: "UVLoop", package: "portsweep"),
            ],
            path: "Benchmarks/ListenBenchmark",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
    ]
)
