import Foundation

/// The benchmarks that install firewall rules only do so in a network namespace that has nothing but loopback
/// (Benchmarks/run makes one with `unshare -n`), never in one with a real interface.
public enum Namespace {
    /// Root, and /proc/self/net/dev (which follows this process's namespace, unlike /sys) lists `lo` alone.
    public static var isPrivate: Bool {
        guard geteuid() == 0, let dev = try? String(contentsOfFile: "/proc/self/net/dev", encoding: .utf8) else { return false }
        let interfaces = dev.split(separator: "\n").dropFirst(2).compactMap {
            $0.split(separator: ":").first?.trimmingCharacters(in: .whitespaces)
        }
        return interfaces == ["lo"]
    }

    /// Makes every address of `prefix` this namespace's own (a local route on loopback, the way 127/8 is), once.
    public static func withLocalRoute(_ prefix: String) async throws {
        precondition(isPrivate, "routes only in a namespace of our own")
        let routes = try await Tool.run("ip", ["route", "show", "table", "local"])
        if !routes.contains("local \(prefix) dev lo") {
            try await Tool.run("ip", ["route", "add", "local", prefix, "dev", "lo"])
        }
    }

    /// Runs `body` while TCP segments to `port` are dropped on input (a Filtered port), in this namespace only;
    /// the rule is gone afterwards, whatever `body` did: benchmarks run after this one sweep every port of the
    /// same namespace (a rule left behind made their port FAIL).
    public static func withTCPDropped<T>(port: UInt16, _ body: () async throws -> T) async throws -> T {
        try await dropTCP(port: port)
        do {
            let result = try await body()
            try await removeRules()
            return result
        } catch {
            try? await removeRules()
            throw error
        }
    }

    private static func removeRules() async throws {
        try await Tool.run("nft", ["delete", "table", "inet", "portsweep_bench"], input: "")
    }

    private static func dropTCP(port: UInt16) async throws {
        precondition(isPrivate, "firewall rules only in a namespace of our own")
        try await Tool.run("nft", ["-f", "-"], input: """
            table inet portsweep_bench {
              chain input {
                type filter hook input priority 0;
                tcp dport \(port) drop
              }
            }

            """)
    }
}
