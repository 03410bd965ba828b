import Foundation
import Testing

/// `serve --rate-limit-store`: two instances and a real redis-server in a network namespace of their own, one
/// client address (127.0.0.1), the default budget of 4 checks a minute. Each phase waits for what it needs
/// (ports listening, `portsweep_rate_limit_store_up` on both), bounded, never a fixed sleep.
@Suite struct SharedBudgetTests {
    static let redis = "/usr/bin/redis-server"
    static let promtool = "/usr/bin/promtool"

    @Test(.enabled(if: Portsweep.canMakeNamespaces, "needs root and unshare"))
    func twoInstancesShareOneBudgetFallBackAndRejoin() throws {
        for tool in [Self.redis, Self.promtool] where !FileManager.default.isExecutableFile(atPath: tool) {
            Issue.record("\(tool) is missing: apt-get install redis-server prometheus (.ci/run does)")
            return
        }
        let out = try Portsweep.shell(["/usr/bin/unshare", "-n", "/bin/sh", "-c", """
            ip link set lo up || exit 99
            pids=""; trap 'kill -9 $pids 2>/dev/null' EXIT
            redis() { \(Self.redis) --port 6379 --bind 127.0.0.1 --save '' --appendonly no --logfile /dev/null & rpid=$!; pids="$pids $rpid"; }
            # $1: what, then a command retried every 20 ms for at most 10 s.
            until_() { what=$1; shift; i=0; until "$@" >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 500 ] && { echo "timeout: $what"; exit 98; }; sleep 0.02; done; }
            up() { curl -sf "http://127.0.0.1:$1/metrics" | grep -qx "portsweep_rate_limit_store_up $2"; }
            check() { curl -s -o /dev/null -w '%{http_code} ' "http://127.0.0.1:$1/check_port?port=1&protocol=tcp"; }
            redis
            for port in 8001 8002; do
                \(Portsweep.binary) serve --listen 127.0.0.1:$port --rate-limit-store redis://127.0.0.1:6379 --redis-timeout 0.5 --bulk-tests-per-hour 10 >/dev/null 2>serve-$port.log &
                pids="$pids $!"
            done
            until_ "8001 shared" up 8001 1.0; until_ "8002 shared" up 8002 1.0
            echo "shared: $(check 8001)$(check 8001)$(check 8001)$(check 8001)$(check 8002)$(check 8002)$(check 8002)$(check 8002)"
            # Bulk sweeps: 6 port tests of a budget of 10 an hour on one instance leave 4 for the other.
            bulk() { curl -s -o /dev/null -w '%{http_code} ' -X POST -H 'Content-Type: application/json' \\
                -d '{"ports": "1-3", "protocols": ["tcp", "udp"], "timeout_ms": 200, "token": "abcdefgh"}' "http://127.0.0.1:$1/sweep"; }
            echo "bulk: $(bulk 8001)$(bulk 8002)"
            for port in 8001 8002; do curl -s "http://127.0.0.1:$port/metrics" | \(Self.promtool) check metrics && echo "promtool $port ok"; done
            kill -9 $rpid; wait $rpid 2>/dev/null
            until_ "8001 local" up 8001 0.0; until_ "8002 local" up 8002 0.0
            echo "local: $(check 8001)$(check 8001)$(check 8001)$(check 8001)$(check 8001)$(check 8002)"
            redis
            until_ "8001 shared again" up 8001 1.0; until_ "8002 shared again" up 8002 1.0
            echo "again: $(check 8001)$(check 8001)$(check 8001)$(check 8001)$(check 8002)"
            curl -s http://127.0.0.1:8002/metrics | grep '^portsweep_rate_limit_store_fallbacks_total' | grep -qv ' 0$' && echo "fallbacks counted"
            for port in 8001 8002; do curl -s "http://127.0.0.1:$port/metrics" | \(Self.promtool) check metrics && echo "promtool $port ok"; done
            grep -c 'unreachable' serve-8001.log; grep -c 'budgets are shared again' serve-8001.log
            rm -f serve-8001.log serve-8002.log
            """])
        let lines = out.split(separator: "\n").map(String.init)
        #expect(lines == [
            // One budget of 4 over both instances.
            "shared: 200 200 200 200 429 429 429 429 ",
            "bulk: 200 429 ",
            "promtool 8001 ok", "promtool 8002 ok",
            // Redis gone: each instance answers under its own limiter (4 each, fresh).
            "local: 200 200 200 200 429 200 ",
            // Redis back (empty: nothing saved): shared again.
            "again: 200 200 200 200 429 ",
            "fallbacks counted",
            "promtool 8001 ok", "promtool 8002 ok",
            "1", "1",
        ], "\(out)")
    }

    /// AUTH with a password from a file (never the command line), and the key prefix: the keys in Redis are the
    /// prefix's, and a wrong password is never "shared" (the instance limits on its own and says why).
    @Test(.enabled(if: Portsweep.canMakeNamespaces, "needs root and unshare"))
    func authFromAFileAndTheKeyPrefix() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.redis) else { Issue.record("\(Self.redis) is missing"); return }
        let out = try Portsweep.shell(["/usr/bin/unshare", "-n", "/bin/sh", "-c", """
            ip link set lo up || exit 99
            pids=""; trap 'kill -9 $pids 2>/dev/null; rm -f $dir/*; rmdir $dir' EXIT
            dir=$(mktemp -d); echo 's3cret' > $dir/right; echo 'wrong' > $dir/wrong
            \(Self.redis) --port 6379 --bind 127.0.0.1 --save '' --appendonly no --logfile /dev/null --requirepass s3cret & pids="$pids $!"
            until_() { what=$1; shift; i=0; until "$@" >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 500 ] && { echo "timeout: $what"; exit 98; }; sleep 0.02; done; }
            metric() { curl -sf "http://127.0.0.1:$1/metrics" | grep -qx "$2"; }
            \(Portsweep.binary) serve --listen 127.0.0.1:8001 --rate-limit-store redis://127.0.0.1 --redis-password-file $dir/right --redis-key-prefix fleet-a: >/dev/null 2>$dir/a.log & pids="$pids $!"
            \(Portsweep.binary) serve --listen 127.0.0.1:8002 --rate-limit-store redis://127.0.0.1:6379 --redis-password-file $dir/wrong >/dev/null 2>$dir/b.log & pids="$pids $!"
            until_ "8001 shared" metric 8001 'portsweep_rate_limit_store_up 1.0'
            curl -s -o /dev/null "http://127.0.0.1:8001/check_port?port=1&protocol=tcp"
            REDISCLI_AUTH=s3cret redis-cli --no-auth-warning keys '*'
            until_ "8002 serving" metric 8002 'portsweep_rate_limit_store_up 0.0'
            curl -s -o /dev/null -w '%{http_code}\\n' "http://127.0.0.1:8002/check_port?port=1&protocol=tcp"
            until_ "8002 says why" grep -q 'AUTH refused' $dir/b.log
            grep -o 'unreachable (not connected (AUTH refused[^)]*' $dir/b.log | head -1
            """])
        let lines = out.split(separator: "\n").map(String.init)
        #expect(lines.count == 3 && lines[0] == "fleet-a:checks:127.0.0.1" && lines[1] == "200", "\(out)")
        #expect(lines.count == 3 && lines[2].hasPrefix("unreachable (not connected (AUTH refused"), "\(out)")
    }

    @Test(arguments: [
        (["--rate-limit-store", "redis://:pw@127.0.0.1"], "--redis-password-file"),
        (["--rate-limit-store", "rediss://127.0.0.1"], "rediss://"),
        (["--rate-limit-store", "http://127.0.0.1"], "http://127.0.0.1"),
        (["--rate-limit-store", "redis://127.0.0.1:0"], "redis://127.0.0.1:0"),
        (["--rate-limit-store", "redis://127.0.0.1/2"], "redis://127.0.0.1/2"),
        (["--rate-limit-store", "redis://127.0.0.1", "--redis-password-file", "/nonexistent/pw"], "/nonexistent/pw"),
        (["--redis-password-file", "/etc/hostname"], "--rate-limit-store"),
        (["--rate-limit-store", "redis://127.0.0.1", "--redis-timeout", "0"], "'0'"),
        (["--rate-limit-store", "redis://127.0.0.1", "--redis-key-prefix", "a b"], "a b"),
        (["--rate-limit-store", "redis://127.0.0.1", "--rate-limit", "off", "--no-bulk"], "--no-bulk"),
    ])
    func badStoreOptionsGetOneLineAndExit64(arguments: [String], named: String) throws {
        let run = try Portsweep.run(["serve", "--listen", "127.0.0.1:0"] + arguments)
        #expect(run.status == 64, "exit status for \(arguments): \(run.stderr)")
        #expect(run.errorLines.count == 1 && run.stderr.contains(named), "stderr: \(run.stderr)")
    }
}
