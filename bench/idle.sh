#!/usr/bin/env bash
# Idle memory: N idle MQTT 5 connections with one subscription each, held
# open, against a fresh mosquitto and a fresh `edgeport serve` in the same
# run. For each broker: VmRSS before the connections and while they are
# held (after a settling pause), per connection; for Edgeport also the Go
# runtime's own split (heap in use, goroutine stacks, goroutines) from its
# /metrics, so the bytes per connection can be attributed.
#
#   bench/idle.sh                 9000 connections, 10 s settle
#   N=2000 SETTLE=5 bench/idle.sh
#   SERVER_BIN=/tmp/edgeport-old bench/idle.sh   Edgeport from another build
#
# Prints a Markdown table. Needs Go, mosquitto and curl; raises the open
# file limit (the bench and each broker hold N sockets).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-9000}
settle=${SETTLE:-10}
mosquitto=/usr/sbin/mosquitto
[ -x "$mosquitto" ] || { echo "needs mosquitto (apt-get install mosquitto)" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt $((n + 1000)) ]; then
  echo "open file limit $(ulimit -n) is below N+1000; raise the hard limit" >&2
  exit 2
fi
tmp=$(mktemp -d)
pid=""
bpid=""
stop() {
  if [ -n "$bpid" ]; then kill "$bpid" 2>/dev/null || true; wait "$bpid" 2>/dev/null || true; bpid=""; fi
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi
}
trap 'stop; rm -rf "$tmp"' EXIT
go build -o "$tmp/edgeport" ./cmd/edgeport
server=${SERVER_BIN:-$tmp/edgeport}
port() { echo $((20000 + RANDOM % 40000)); }
rss() {
  if ! awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; then
    echo "broker (pid $1) is gone; logs:" >&2
    tail -20 "$tmp/m.log" "$tmp/e.log" >&2 2>/dev/null || true
    exit 1
  fi
}
metric() { curl -s "http://$http/metrics" | awk -v m="$1" '$1 == m {printf "%.0f", $2}'; }

# measure NAME: runs the idle scenario against $addr (broker $pid) and
# prints one table row.
measure() {
  local name=$1 before after
  sleep 1
  before=$(rss "$pid")
  local mb=() ma=()
  if [ "$name" = edgeport ]; then mb=("$(metric go_memstats_heap_inuse_bytes)" "$(metric go_memstats_stack_inuse_bytes)" "$(metric go_goroutines)"); fi
  "$tmp/edgeport" bench --addr "$addr" --scenario idle --clients "$n" --qos 1 --duration $((settle + 60))s -o json >"$tmp/$name.json" 2>"$tmp/$name.err" &
  bpid=$!
  for _ in $(seq 1200); do
    grep -q 'holding for' "$tmp/$name.err" && break
    kill -0 "$bpid" 2>/dev/null || { cat "$tmp/$name.err" >&2; exit 1; }
    sleep 0.1
  done
  sleep "$settle"
  after=$(rss "$pid")
  if [ "$name" = edgeport ]; then ma=("$(metric go_memstats_heap_inuse_bytes)" "$(metric go_memstats_stack_inuse_bytes)" "$(metric go_goroutines)"); fi
  kill "$bpid" 2>/dev/null || true
  wait "$bpid" 2>/dev/null || true
  bpid=""
  local per
  per=$(awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN {printf "%.2f", (a - b) / n}')
  if [ "$name" = edgeport ]; then
    awk -v n="$n" -v per="$per" -v b="$before" -v a="$after" -v h0="${mb[0]}" -v h1="${ma[0]}" -v s0="${mb[1]}" -v s1="${ma[1]}" -v g0="${mb[2]}" -v g1="${ma[2]}" 'BEGIN {
      printf "| Edgeport | %d | %d | %s | %.2f | %.2f | %.2f |\n", b, a, per, (h1 - h0) / n / 1024, (s1 - s0) / n / 1024, (g1 - g0) / n }'
  else
    echo "| mosquitto | $before | $after | $per | | | |"
  fi
}

echo "$n idle connections with one QoS 1 subscription each, held ${settle} s before reading; $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| broker | RSS before (KiB) | RSS with $n (KiB) | RSS per connection (KiB) | Go heap in use per connection (KiB) | goroutine stacks per connection (KiB) | goroutines per connection |"
echo "|---|---:|---:|---:|---:|---:|---:|"
# A random port may be taken: try a few.
for _ in 1 2 3 4 5; do
  p=$(port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1024\nmax_queued_messages 10000\n' "$p" >"$tmp/m.conf"
  "$mosquitto" -c "$tmp/m.conf" >"$tmp/m.log" 2>&1 &
  pid=$!
  addr=127.0.0.1:$p
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && break
  wait "$pid" 2>/dev/null || true
  pid=""
done
[ -n "$pid" ] || { echo "mosquitto did not start:" >&2; cat "$tmp/m.log" >&2; exit 1; }
measure mosquitto
stop

"$server" serve --mqtt-addr 127.0.0.1:0 --ws-addr off --http-addr 127.0.0.1:0 --data-dir "$tmp/data" >"$tmp/e.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  addr=$(grep -o 'msg=listening listener=mqtt addr=[0-9.:]*' "$tmp/e.log" | head -1 | sed 's/.*addr=//' || true)
  http=$(grep -o 'msg=listening listener=http addr=[0-9.:]*' "$tmp/e.log" | head -1 | sed 's/.*addr=//' || true)
  [ -n "$addr" ] && [ -n "$http" ] && break
  sleep 0.1
done
measure edgeport
stop
