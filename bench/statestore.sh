#!/usr/bin/env bash
# State store throughput: 16 clients of the Azure IoT Operations state
# store protocol over real MQTT 5 on loopback TCP against a fresh, durable
# `edgeport serve` (sync policy batch: every answer waits for its group's
# fsync), with the broker's own QoS 1 rate measured in the same run.
#
#   bench/statestore.sh                  10 s per scenario
#   DURATION=5s CLIENTS=16 bench/statestore.sh
#   SERVER_BIN=/tmp/edgeport-old bench/statestore.sh   serve with another build
#
# Prints a Markdown table for BENCHMARKS.md. Needs Go and jq.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-10s}
clients=${CLIENTS:-16}
tmp=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
command -v jq >/dev/null || { echo "needs jq (apt-get install jq)" >&2; exit 2; }
go build -o "$tmp/edgeport" ./cmd/edgeport
server=${SERVER_BIN:-$tmp/edgeport}
"$server" serve --mqtt-addr 127.0.0.1:0 --ws-addr off --http-addr off --data-dir "$tmp/data" >"$tmp/log" 2>&1 &
pid=$!
addr=""
for _ in $(seq 100); do
  addr=$(grep -o 'msg=listening listener=mqtt addr=[0-9.:]*' "$tmp/log" | head -1 | sed 's/.*addr=//' || true)
  [ -n "$addr" ] && grep -q 'state store started' "$tmp/log" && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$tmp/log" >&2; exit 1; }

run() { # title, bench arguments...
  local title=$1
  shift
  "$tmp/edgeport" bench --addr "$addr" --duration "$duration" -o json --progress=false "$@" >"$tmp/r.json"
  jq -r --arg t "$title" '
    def r2: . * 100 | round / 100;
    def ms(l): if l == null then "" else "\(l.p50_ms | r2) / \(l.p99_ms | r2)" end;
    if .scenario == "statestore" then
      "| \($t) | \(.sets_per_sec // 0 | floor) | \(.gets_per_sec // 0 | floor) | \(ms(.set_latency)) | \(ms(.get_latency)) | \(.errors // 0) / \(.lost) |"
    else
      "| \($t) | \(.received_per_sec | floor) msg/s delivered | | \(.latency.p50_ms | r2) / \(.latency.p99_ms | r2) | | 0 / \(.lost) |"
    end' "$tmp/r.json"
}

echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load average before the run: $(cut -d' ' -f1-3 /proc/loadavg); $duration per row, $clients clients."
echo
echo "| scenario | SET/s | GET/s | SET p50 / p99 (ms) | GET p50 / p99 (ms) | errors / unanswered |"
echo "|---|---:|---:|---:|---:|---:|"
run "broker QoS 1 p2p, $clients pairs (context)" --scenario p2p --clients "$clients" --qos 1
for w in 1 16; do
  run "SET, $w in flight per client" --scenario statestore --clients "$clients" --window "$w"
  run "GET, $w in flight per client" --scenario statestore --clients "$clients" --window "$w" --gets 100
done
run "90% GET / 10% SET, 16 in flight per client" --scenario statestore --clients "$clients" --window 16 --gets 90
