// swift-tools-version: 6.1
//
// portsweep: every port of a range, listened on and probed at once, on libuv loops.
// Layers (each depends only on those below it):
//   CLI          portsweep (executable) → PortsweepCLI: parse, validate, call one mode, render
//   modes        PortsweepSweep, PortsweepListen, PortsweepServe (each its one home), PortsweepReport (rendering),
//                PortsweepDashboard (the pages a running mode serves)
//   shared       PortsweepHTTP (the one HTTP/1.1 server), PortsweepEngine (values, probes, scheduler)
//   loop         UVLoop: the only target that sees libuv (imported internally); UVRedis: hiredis on a loop UVLoop
//                lends it (the raw loop, untyped, package access)
//   C shims      CLibUV, CHTTPParser: module maps of Debian's libuv1-dev and libhttp-parser-dev; CHiredisUV:
//                Debian's libhiredis-dev and its libuv adapter, compiled in C
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "portsweep",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "portsweep", targets: ["portsweep"]),
        .library(name: "UVLoop", targets: ["UVLoop"]),
        .library(name: "UVRedis", targets: ["UVRedis"]),
        .library(name: "PortsweepSweep", targets: ["PortsweepSweep"]),
        .library(name: "PortsweepReport", targets: ["PortsweepReport"]),
        .library(name: "PortsweepDashboard", targets: ["PortsweepDashboard"]),
        .library(name: "PortsweepListen", targets: ["PortsweepListen"]),
        .library(name: "PortsweepServe", targets: ["PortsweepServe"]),
        .library(name: "PortsweepHTTP", targets: ["PortsweepHTTP"]),
        .library(name: "PortsweepEngine", targets: ["PortsweepEngine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.3.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // C shims: module maps and nothing else.
        .systemLibrary(name: "CLibUV", pkgConfig: "libuv", providers: [.apt(["libuv1-dev"])]),
        // Debian's libhttp-parser-dev ships no .pc file.
        .systemLibrary(name: "CHTTPParser", providers: [.apt(["libhttp-parser-dev"])]),

        // hiredis's libuv adapter is header-only C over libuv's types: compiled here, exposed without them.
        .target(name: "CHiredisUV", linkerSettings: [.linkedLibrary("hiredis"), .linkedLibrary("uv")]),

        // The loop: libuv as a Swift executor, handles with uv_close discipline, addresses, errors.
        .target(name: "UVLoop", dependencies: ["CLibUV"], swiftSettings: strict),
        // A Redis client on a loop: hiredis's async API through its libuv adapter, a deadline of ours per command.
        .target(name: "UVRedis", dependencies: ["CHiredisUV", "UVLoop"], swiftSettings: strict),

        // The engine: domain values, per-port state machines, the scheduler.
        .target(
            name: "PortsweepEngine",
            dependencies: ["UVLoop"],
            swiftSettings: strict),

        // HTTP/1.1 request framing (http-parser behind an interface of our own), shared by listen and serve.
        .target(
            name: "PortsweepHTTP",
            dependencies: [
                "CHTTPParser", "UVLoop",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict),

        // The sweep mode: a configuration in, an AsyncSequence of results out.
        .target(
            name: "PortsweepSweep",
            dependencies: ["PortsweepEngine", "PortsweepHTTP", "UVLoop", .product(name: "Metrics", package: "swift-metrics"), .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            swiftSettings: strict),

        // The listen mode: hold listeners on a range, reply, and stream what happens as events.
        .target(name: "PortsweepListen", dependencies: ["PortsweepEngine", "PortsweepHTTP", "UVLoop", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")], swiftSettings: strict),

        // The serve mode: the "check my port" web service on the loop.
        .target(
            name: "PortsweepServe",
            dependencies: [
                "PortsweepHTTP", "PortsweepEngine", "PortsweepSweep", "PortsweepReport", "UVLoop", "UVRedis",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict),

        // The dashboards: pages served by portsweep itself, on a loop of their own.
        .target(
            name: "PortsweepDashboard",
            dependencies: [
                "PortsweepHTTP", "PortsweepListen", "PortsweepReport", "PortsweepEngine", "UVLoop",
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strict),

        // Rendering of results: grouped text, JSON Lines, CSV, summaries.
        .target(name: "PortsweepReport", dependencies: ["PortsweepEngine", .product(name: "Yams", package: "Yams")],
                swiftSettings: strict),

        // The command line: parse, validate, call a mode, render. No socket code.
        .target(
            name: "PortsweepCLI",
            dependencies: [
                "PortsweepSweep", "PortsweepListen", "PortsweepServe", "PortsweepDashboard", "PortsweepHTTP", "PortsweepReport", "PortsweepEngine", "UVLoop",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .executableTarget(name: "portsweep", dependencies: ["PortsweepCLI"], swiftSettings: strict),

        // Unit and in-process tests: one target per library target, each on real loopback sockets where it
        // touches the network.
        .testTarget(name: "UVLoopTests", dependencies: ["UVLoop"], swiftSettings: strict),
        .testTarget(name: "UVRedisTests", dependencies: ["UVRedis", "UVLoop"], swiftSettings: strict),
        .testTarget(name: "EngineTests", dependencies: ["PortsweepEngine", "UVLoop"], swiftSettings: strict),
        .testTarget(name: "HTTPTests", dependencies: ["PortsweepHTTP", "UVLoop"], swiftSettings: strict),
        .testTarget(name: "SweepTests", dependencies: ["PortsweepSweep", "PortsweepEngine", "UVLoop"], swiftSettings: strict),
        .testTarget(name: "ListenTests", dependencies: ["PortsweepListen", "PortsweepHTTP", "PortsweepEngine", "UVLoop"], swiftSettings: strict),
        .testTarget(
            name: "ServeTests",
            dependencies: ["PortsweepServe", "PortsweepHTTP", "PortsweepEngine", "UVLoop"],
            swiftSettings: strict),
        .testTarget(name: "ReportTests", dependencies: ["PortsweepReport", "PortsweepEngine"], swiftSettings: strict),
        .testTarget(
            name: "DashboardTests",
            dependencies: ["PortsweepDashboard", "PortsweepListen", "PortsweepHTTP", "PortsweepEngine", "UVLoop",
                           .product(name: "HTTPTypes", package: "swift-http-types")],
            swiftSettings: strict),
        .testTarget(
            name: "CLITests",
            dependencies: ["PortsweepCLI", "PortsweepListen", "PortsweepEngine", "UVLoop", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict),
        // End-to-end: the built binary in network namespaces of its own (root only).
        .testTarget(name: "EndToEndTests", dependencies: ["PortsweepEngine"], swiftSettings: strict),
    ]
)
