#!/bin/bash
# What listen --dashboard costs the listeners: Benchmarks/listen-dashboard-cost.sh with|without (root, wrk;
# swift build -c release first). `listen --ports 8080 --reply http` in a fresh namespace under wrk (2 threads, 100
# keep-alive connections, 5 s); "with" starts the listen from its page's form and keeps the page's event stream
# open the whole time, as a browser would (CLOSE=1: a new connection per request, a log line each). Prints wrk's Requests/sec. Run in turn and compare medians:
#   for i in 1 2 3 4 5; do echo "$(Benchmarks/listen-dashboard-cost.sh without) | $(Benchmarks/listen-dashboard-cost.sh with)"; done
BIN="$(cd "$(dirname "$0")/.." && pwd)/.build/release/portsweep"
unshare -n bash -c '
ip link set lo up
if [ "$1" = with ]; then
  $0 listen --dashboard 127.0.0.1:9900 -q >/dev/null 2>/tmp/ld.err &
  pid=$!
  for i in $(seq 1 200); do grep -q "dashboard at" /tmp/ld.err && break; sleep 0.01; done
  url=$(grep -o "http://[^ ]*token=[0-9a-f]*" /tmp/ld.err | head -1)
  curl -s -c /tmp/ld.jar "$url" >/dev/null
  curl -s -N -b /tmp/ld.jar http://127.0.0.1:9900/events > /tmp/ld.events &
  curl -s -b /tmp/ld.jar -H "Origin: http://127.0.0.1:9900" -H "Content-Type: application/json" \
       -d "{\"ports\":\"8080\",\"bind\":\"0.0.0.0\",\"protocols\":\"tcp\",\"reply\":\"http\"}" http://127.0.0.1:9900/start >/dev/null
else
  $0 listen --ports 8080 --tcp-only --reply http -q >/dev/null 2>/tmp/ld.err &
  pid=$!
fi
for i in $(seq 1 200); do curl -s -o /dev/null http://127.0.0.1:8080/ && break; sleep 0.01; done
wrk -t2 -c100 -d5s ${CLOSE:+-H "Connection: close"} http://127.0.0.1:8080/ | grep Requests/sec
if [ "$1" = with ]; then echo "events: $(grep -c "^event: update" /tmp/ld.events) bytes: $(wc -c < /tmp/ld.events) rss_kb: $(grep VmHWM /proc/$pid/status | tr -s " " | cut -d" " -f2)" >&2; fi
kill -INT $pid; wait $pid' $BIN $1
