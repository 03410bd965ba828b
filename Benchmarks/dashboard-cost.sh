#!/bin/bash
# What sweep --dashboard costs the sweep: Benchmarks/dashboard-cost.sh with|without (root; swift build -c release
# first). One sweep of TCP/UDP 1-60000 in a fresh namespace (the page on 65000, outside the range), printing the
# sweep's own seconds from its summary; "with" opens the page's event stream as a browser would (NOPAGE=1: the
# dashboard up, no page open) and prints how many updates and bytes it was sent. Both variants poll the same way,
# so the harness costs them alike. Run them in turn several times and compare medians:
#   for i in 1 2 3 4 5 6 7; do echo "$(Benchmarks/dashboard-cost.sh without) | $(Benchmarks/dashboard-cost.sh with)"; done
BIN="$(cd "$(dirname "$0")/.." && pwd)/.build/release/portsweep"
unshare -n bash -c '
ip link set lo up
if [ "$1" = with ]; then
  $0 sweep --ports 1-60000 --dashboard 127.0.0.1:65000 >/dev/null 2>/tmp/db.err &
  pid=$!
  for i in $(seq 1 200); do grep -q "dashboard at" /tmp/db.err && break; sleep 0.01; done
  url=$(grep -o "http://[^ ]*token=[0-9a-f]*" /tmp/db.err | head -1)
  curl -s -c /tmp/db.jar "$url" >/dev/null
  [ -z "$NOPAGE" ] && curl -s -N -b /tmp/db.jar http://127.0.0.1:65000/events > /tmp/db.events &
  for i in $(seq 1 3000); do grep -q "stays up" /tmp/db.err && break; sleep 0.01; done
  kill -INT $pid; wait $pid; kill %2 2>/dev/null
  echo "events: $(grep -c "^event: update" /tmp/db.events) bytes: $(wc -c < /tmp/db.events)" >&2
  grep -o "in [0-9.]* s" /tmp/db.err | head -1
else
  $0 sweep --ports 1-60000 >/dev/null 2>/tmp/db.err &
  pid=$!
  curl -s http://127.0.0.1:1/ >/dev/null
  for i in $(seq 1 3000); do grep -q "tests/s" /tmp/db.err && break; sleep 0.01; done
  wait $pid
  grep -o "in [0-9.]* s" /tmp/db.err | head -1
fi' $BIN $1
