import Foundation
import Testing

/// `--target` takes host names, resolved through the system resolver (libuv's uv_getaddrinfo). Each sweep runs
/// in network and mount namespaces of its own with a private /etc/hosts, so names resolve the same on every
/// machine and no query leaves the namespace (it has nothing but loopback).
@Suite(.enabled(if: Portsweep.canMakeNamespaces, "needs root and unshare"))
struct TargetNameTests {
    /// `before`: shell lines run first in the same namespace (far ends started in the background, stopped at exit:
    /// by the pids `started` records, since dash's `$(jobs -p)` runs in a subshell that has no jobs, and left
    /// them running after CI's run).
    static func sweep(_ arguments: String, before: String = "") throws -> String {
        let hosts = FileManager.default.temporaryDirectory.appendingPathComponent("hosts-\(UUID().uuidString)")
        try "127.0.0.1 checker.test\n::1 checker6.test\n2001:db8::1 only6.test\n127.0.0.1 both.test\n::1 both.test\n".write(to: hosts, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: hosts) }
        let script = """
            ip link set lo up && mount --bind \(hosts.path) /etc/hosts || exit 99
            bg=""; trap 'kill $bg 2>/dev/null' EXIT
            \(before)
            \(Portsweep.binary) sweep \(arguments) 2>&1
            echo "rc=$?"
            """
        return try Portsweep.shell(["/usr/bin/unshare", "-n", "-m", "/bin/sh", "-c", script])
    }

    @Test func aNameResolvesAndIsSweptLikeItsAddress() throws {
        let out = try Self.sweep("--ports 5000-5009 --target checker.test --tcp-only -v")
        #expect(out.contains("--target checker.test is 127.0.0.1"), "\(out)")
        #expect(out.contains("[PASS] 5000-5009") && out.hasSuffix("rc=0\n"), "\(out)")
    }

    @Test func anIPv6NameGivesAnIPv6Sweep() throws {
        let out = try Self.sweep("--ports 5000-5009 --target checker6.test --bind :: --tcp-only -v")
        #expect(out.contains("--target checker6.test is ::1"), "\(out)")
        #expect(out.contains("[PASS] 5000-5009") && out.hasSuffix("rc=0\n"), "\(out)")
    }

    /// Started in the background of `sweep(before:)`; returns once `port` is listened on (TCP), at most 10 s.
    static func started(_ command: String, listening port: Int) -> String {
        """
        \(Portsweep.binary) \(command) >/dev/null 2>&1 &
        bg="$bg $!"
        i=0; until ss -Hltn 'sport = :\(port)' | grep -q .; do i=$((i+1)); [ $i -gt 200 ] && exit 98; sleep 0.05; done
        """
    }

    @Test func toAnIPv6NameSweepsTheFarListenOverIPv6() throws {
        let far = Self.started("listen --ports 3000-3009 --reply echo --bind :: -q", listening: 3009)
        let out = try Self.sweep("--ports 3000-3011 --to checker6.test", before: far)
        #expect(out.contains("the listener on ::1 does not hold TCP 3010-3011"), "\(out)")
        #expect(out.contains("[PASS] TCP/UDP 3000-3009\n[ERRO] TCP/UDP 3010-3011\n") && out.hasSuffix("rc=1\n"), "\(out)")
    }

    @Test func viaAnIPv6CheckerURLSweepsOverIPv6() throws {
        let checker = Self.started("serve --listen [::1]:8001", listening: 8001)
        let out = try Self.sweep("--ports 4000-4009 --via http://checker6.test:8001", before: checker)
        #expect(out.contains("[PASS] TCP/UDP 4000-4009\n") && out.hasSuffix("rc=0\n"), "\(out)")
        // The same checker by its IPv4 name is not there (serve holds only [::1]:8001): exit 2, not a verdict.
        let refused = try Self.sweep("--ports 4000 --via http://checker.test:8001", before: checker)
        #expect(refused.contains("rc=2\n"), "\(refused)")
    }

    @Test func aNameThatDoesNotResolveIsOneLineAndNoSweep() throws {
        // Not in the hosts file, and no resolver reachable from an empty namespace: this machine cannot ask.
        let out = try Self.sweep("--ports 5000 --target nowhere.test")
        #expect(out == "portsweep: --target cannot resolve 'nowhere.test': temporary failure\nrc=2\n", "\(out)")
    }

    @Test func aNameWithoutAnAddressOfTheBindFamilyIsBadInput() throws {
        // (An IPv6 loopback name would do: glibc answers ::1 as 127.0.0.1 when asked for IPv4.)
        let out = try Self.sweep("--ports 5000 --target only6.test --bind 0.0.0.0")
        #expect(out.hasPrefix("portsweep: --target 'only6.test' has no IPv4 address (only 2001:db8::1); --bind 0.0.0.0"), "\(out)")
        #expect(out.hasSuffix("rc=64\n"), "\(out)")
    }

    /// `--ipv4` / `--ipv6` choose which of a name's addresses is swept; the listeners follow the family.
    @Test func ipv4AndIPv6ChooseTheFamilyOfAName() throws {
        let v6 = try Self.sweep("--ports 5000-5004 --target both.test --ipv6 --tcp-only -v")
        #expect(v6.contains("--target both.test is ::1") && v6.contains("[PASS] 5000-5004") && v6.hasSuffix("rc=0\n"), "\(v6)")
        let v4 = try Self.sweep("--ports 5000-5004 --target both.test --ipv4 --tcp-only -v")
        #expect(v4.contains("--target both.test is 127.0.0.1") && v4.contains("[PASS] 5000-5004") && v4.hasSuffix("rc=0\n"), "\(v4)")
        let far = Self.started("listen --ports 3000-3004 --reply echo --bind :: -q", listening: 3004)
        let to = try Self.sweep("--ports 3000-3004 --to both.test --ipv6 -v", before: far)
        #expect(to.contains("--to both.test is ::1") && to.contains("[PASS] TCP/UDP 3000-3004") && to.hasSuffix("rc=0\n"), "\(to)")
        let missing = try Self.sweep("--ports 5000 --target only6.test --ipv4")
        #expect(missing == "portsweep: --target 'only6.test' has no IPv4 address (only 2001:db8::1); --ipv4 was given\nrc=64\n", "\(missing)")
    }

    /// Without a target, --ipv6 sweeps ::1; a bracketed IPv6 target is an address like any other.
    @Test func ipv6WithoutATargetSweepsTheIPv6Loopback() throws {
        let out = try Self.sweep("--ports 5000-5002 --ipv6 --tcp-only -v")
        #expect(out.contains("sweeping 3 ports (TCP) of ::1 (listeners on ::)") && out.contains("[PASS] 5000-5002"), "\(out)")
        #expect(out.hasSuffix("rc=0\n"), "\(out)")
        let bracketed = try Self.sweep("--ports 5000-5002 --target [::1] --tcp-only")
        #expect(bracketed.contains("[PASS] 5000-5002") && bracketed.hasSuffix("rc=0\n"), "\(bracketed)")
    }

    /// A flag that disagrees with an address given is one line naming both, exit 64; both flags at once too.
    @Test func aFamilyFlagThatDisagreesIsOneLine() throws {
        let cases = [
            ("--ports 1 --ipv6 --target 127.0.0.1", "portsweep: --ipv6 and --target 127.0.0.1 disagree: 127.0.0.1 is an IPv4 address"),
            ("--ports 1 --ipv4 --bind ::", "portsweep: --ipv4 and --bind :: disagree: :: is an IPv6 address"),
            ("--ports 1 --ipv4 --to ::1", "portsweep: --ipv4 and --to ::1 disagree: ::1 is an IPv6 address"),
            ("--ports 1 --ipv4 --ipv6", "portsweep: Value to be set with flag '--ipv6' had already been set with flag '--ipv4'"),
        ]
        for (arguments, line) in cases {
            let out = try Self.sweep(arguments)
            let lines = out.split(separator: "\n")
            #expect(lines.count == 2 && lines[0].hasPrefix(line) && lines[1] == "rc=64", "\(arguments): \(out)")
        }
    }
}
