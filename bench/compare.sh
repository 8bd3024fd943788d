#!/usr/bin/env bash
# Runs the same `edgeport bench` scenarios against Debian's mosquitto and
# Edgeport, alternately, ROUNDS times each, and writes the medians to
# BENCHMARKS.md. Every broker is started fresh for every run.
#
#   bench/compare.sh              full run (10 s per scenario, 3 rounds, ~15 min)
#   QUICK=1 bench/compare.sh      smoke run (1 s, 1 round); writes to $OUT or /tmp
#
# Environment: ROUNDS (default 3, QUICK 1), DURATION (default 10s, QUICK 1s),
# OUT (default BENCHMARKS.md at the repository root; QUICK defaults to
# ${TMPDIR:-/tmp}/edgeport-benchmarks-quick.md).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

quick=${QUICK:-0}
if [ "$quick" = 1 ]; then
  rounds=${ROUNDS:-1}
  duration=${DURATION:-1s}
  hold=2s
  out=${OUT:-${TMPDIR:-/tmp}/edgeport-benchmarks-quick.md}
else
  rounds=${ROUNDS:-3}
  duration=${DURATION:-10s}
  hold=5s
  out=${OUT:-$root/BENCHMARKS.md}
fi
if ! [[ $duration =~ ^[0-9]+s$ ]]; then
  echo "DURATION must be whole seconds, like 10s" >&2
  exit 2
fi
dur_s=${duration%s}
# No single bench run may take longer than this (set-up, drain and close included).
run_timeout=$((dur_s + 120))
idle_conns=2000
mosquitto=/usr/sbin/mosquitto

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

need=()
[ -x "$mosquitto" ] || need+=(mosquitto)
command -v jq >/dev/null 2>&1 || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The idle scenario holds thousands of sockets in the bench and in the broker.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

tmp=$(mktemp -d)
broker_pid=""
stop_broker() {
  if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$broker_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  broker_pid=""
}
cleanup() {
  stop_broker
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A hand-written section (targets and their limits) below this marker in
# the existing report is kept across runs.
marker='<!-- hand-written below: kept by compare.sh -->'
kept=$tmp/kept.md
if [ -f "$out" ] && grep -qF "$marker" "$out"; then
  sed -n "/$marker/,\$p" "$out" >"$kept"
fi

log "building edgeport"
go build -o "$tmp/edgeport" ./cmd/edgeport
bin=$tmp/edgeport

accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_mosquitto and start_edgeport set broker_pid and broker_addr.
start_mosquitto() {
  local port conf=$tmp/mosquitto.conf
  for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    accepts "$port" && continue
    # The limits match Edgeport's defaults (max-inflight 1024, 10000 queued
    # messages), and Nagle is off as in Go, so that both brokers run with the
    # same flow-control budget and neither pays delayed-ACK stalls.
    cat >"$conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
max_inflight_messages 1024
max_queued_messages 10000
EOF
    "$mosquitto" -c "$conf" >"$tmp/mosquitto.log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 100); do
      if accepts "$port"; then
        broker_addr=127.0.0.1:$port
        return 0
      fi
      kill -0 "$broker_pid" 2>/dev/null || break
      sleep 0.1
    done
    stop_broker
  done
  log "mosquitto did not start:"; cat "$tmp/mosquitto.log" >&2
  return 1
}

start_edgeport() {
  rm -rf "$tmp/data"
  # shellcheck disable=SC2086
  "$bin" serve --mqtt-addr 127.0.0.1:0 --ws-addr off --http-addr off --data-dir "$tmp/data" ${EDGEPORT_SERVE_ARGS:-} >"$tmp/edgeport.log" 2>&1 &
  broker_pid=$!
  for _ in $(seq 100); do
    broker_addr=$(grep -o 'msg=listening listener=mqtt addr=[0-9.:]*' "$tmp/edgeport.log" | head -1 | sed 's/.*addr=//' || true)
    if [ -n "$broker_addr" ] && accepts "${broker_addr##*:}"; then
      return 0
    fi
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
  done
  log "edgeport did not start:"; cat "$tmp/edgeport.log" >&2
  stop_broker
  return 1
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Scenarios: id|title|bench arguments. "rate" is added after the rounds.
scenarios=(
  "p2p1-q0|QoS 0, p2p 1 pair (1->1)|--scenario p2p --clients 1 --qos 0"
  "p2p10-q0|QoS 0, p2p 10 pairs|--scenario p2p --clients 10 --qos 0"
  "fanout100-q0|QoS 0, fan-out 1->100|--scenario fanout --clients 100 --qos 0"
  "fanin100-q0|QoS 0, fan-in 100->1|--scenario fanin --clients 100 --qos 0"
  "shared-q0|QoS 0, shared subscription 10 publishers -> 4 group members|--scenario shared --clients 10 --subscribers 4 --qos 0"
  "p2p10-q1|QoS 1, p2p 10 pairs|--scenario p2p --clients 10 --qos 1"
  "p2p1-q2|QoS 2, p2p 1 pair|--scenario p2p --clients 1 --qos 2"
  "connstorm|connection storm, 1000 connections|--scenario connstorm --clients 1000"
  "idle|$idle_conns idle connections with one subscription each|--scenario idle --clients $idle_conns --duration $hold"
)

# run_one BROKER ID ROUND ARGS...: one fresh broker, one bench run, JSON kept
# in $tmp/res/ID/BROKER.ROUND.json. A failed run leaves no file.
run_one() {
  local broker=$1 id=$2 round=$3
  shift 3
  local dir=$tmp/res/$id
  mkdir -p "$dir"
  local json=$dir/$broker.$round.json err=$dir/$broker.$round.err
  "start_$broker" || return 0
  local before
  before=$(rss_kb "$broker_pid")
  local rc=0
  if [ "$id" = idle ]; then
    timeout "$run_timeout" "$bin" bench --addr "$broker_addr" -o json "$@" >"$json.tmp" 2>"$err" &
    local bpid=$!
    local ok=0
    for _ in $(seq 600); do
      if grep -q 'holding for' "$err"; then ok=1; break; fi
      kill -0 "$bpid" 2>/dev/null || break
      sleep 0.1
    done
    local after=0
    if [ $ok = 1 ]; then
      sleep 1 # let the broker settle after the last SUBACK
      after=$(rss_kb "$broker_pid")
    fi
    wait "$bpid" || rc=$?
    if [ $rc = 0 ] && [ $ok = 1 ]; then
      jq --argjson b "$before" --argjson a "$after" \
        '. + {rss_before_kb: $b, rss_after_kb: $a, rss_per_conn_kb: (($a - $b) / .connections)}' "$json.tmp" >"$json"
    fi
  else
    timeout "$run_timeout" "$bin" bench --addr "$broker_addr" --duration "$duration" -o json "$@" >"$json.tmp" 2>"$err" || rc=$?
    # Exit status 2 means QoS 1/2 messages were lost: the result stands, and shows it.
    if [ $rc = 0 ] || [ $rc = 2 ]; then mv "$json.tmp" "$json"; fi
  fi
  rm -f "$json.tmp"
  if [ ! -s "$json" ]; then
    log "  $broker: FAILED (exit $rc): $(tail -3 "$err" | tr '\n' ' ')"
  fi
  stop_broker
}

summary() { # one line of the headline figure, for the log
  local f=$1
  [ -s "$f" ] || { echo "failed"; return; }
  jq -r 'if .scenario == "connstorm" then "\(.conn_per_sec|floor) conn/s"
         elif .scenario == "idle" then "\(.rss_per_conn_kb*100|floor/100) KiB RSS per connection"
         else "\(.received_per_sec|floor) msg/s delivered, p99 \(.latency.p99_ms) ms, lost \(.lost)" end' "$f"
}

for round in $(seq "$rounds"); do
  for s in "${scenarios[@]}"; do
    IFS='|' read -r id title args <<<"$s"
    order="mosquitto edgeport"
    [ $((round % 2)) = 0 ] && order="edgeport mosquitto"
    log "round $round/$rounds: $title"
    for broker in $order; do
      # shellcheck disable=SC2086
      run_one "$broker" "$id" "$round" $args
      log "  $broker: $(summary "$tmp/res/$id/$broker.$round.json")"
    done
  done
done

# median ID BROKER JQ: the median over rounds of one figure, or empty.
median() {
  local files=("$tmp/res/$1/$2".*.json)
  [ -e "${files[0]}" ] || return 0
  jq -s "[.[] | $3] | sort | if length == 0 then empty elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end" "${files[@]}"
}

# The latency run uses half the 1->1 QoS 0 rate of the slower broker, so that
# both brokers are measured at the same load, which both sustain.
m=$(median p2p1-q0 mosquitto .received_per_sec)
e=$(median p2p1-q0 edgeport .received_per_sec)
rate=$(jq -n --argjson m "${m:-0}" --argjson e "${e:-0}" '[$m, $e] | map(select(. > 0)) | if length == 0 then 1000 else (min / 2 | floor) end')
rate_title="QoS 0, p2p 1 pair at a fixed $rate msg/s (half the slower broker's 1->1 maximum)"
rate_args="--scenario p2p --clients 1 --qos 0 --rate $rate"
for round in $(seq "$rounds"); do
  order="mosquitto edgeport"
  [ $((round % 2)) = 0 ] && order="edgeport mosquitto"
  log "round $round/$rounds: $rate_title"
  for broker in $order; do
    # shellcheck disable=SC2086
    run_one "$broker" rate "$round" $rate_args
    log "  $broker: $(summary "$tmp/res/rate/$broker.$round.json")"
  done
done
scenarios+=("rate|$rate_title|$rate_args")

# ---- BENCHMARKS.md ----
num() { # human formatting of a number, "n/a" when empty
  [ -n "${1:-}" ] || { echo "n/a"; return; }
  awk -v v="$1" -v d="${2:-0}" 'BEGIN { printf("%.*f", d, v) }'
}
ratio() {
  if [ -z "${1:-}" ] || [ -z "${2:-}" ]; then echo "n/a"; return; fi
  awk -v m="$1" -v e="$2" 'BEGIN { if (m == 0) print "n/a"; else printf("%.2f×", e / m) }'
}
row() { # label jq-expr decimals
  local m e
  m=$(median "$id" mosquitto "$2")
  e=$(median "$id" edgeport "$2")
  printf '| %s | %s | %s | %s |\n' "$1" "$(num "$m" "$3")" "$(num "$e" "$3")" "$(ratio "$m" "$e")"
}

mosq_version=$("$mosquitto" -h 2>&1 | head -1 | sed 's/^mosquitto version //' || true)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- cmd internal 2>/dev/null || true)" ]; then commit="$commit (with uncommitted changes)"; fi
cmdline="bench/compare.sh"
[ "$quick" = 1 ] && cmdline="QUICK=1 $cmdline"
[ -n "${ROUNDS:-}" ] && cmdline="ROUNDS=$ROUNDS $cmdline"
[ -n "${DURATION:-}" ] && cmdline="DURATION=$DURATION $cmdline"

{
  echo "# Benchmarks: Edgeport and mosquitto"
  echo
  if [ "$quick" = 1 ]; then
    echo "**Smoke run (QUICK=1): $duration per scenario and $rounds round; the figures are indicative only.**"
    echo
  fi
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')),"
  echo "$(uname -sr), $(go version | awk '{print $3}'), Edgeport $commit, mosquitto $mosq_version (Debian)."
  echo
  echo "Reproduce with \`$cmdline\` from the repository root (about 15 minutes for"
  echo "the default 3 rounds of 10 s). Each figure is the median of $rounds round(s);"
  echo "the brokers run alternately and each is started fresh for every run."
  echo
  echo "**The load generator shares the machine with the broker**: \`edgeport bench\`"
  echo "runs on the same $(nproc) cores, so every figure is what broker and client"
  echo "reach together, and a faster broker is held back by the client more than a"
  echo "slower one."
  echo
  echo "How it is measured (see \`edgeport bench --help\`):"
  echo
  echo "- Clients use MQTT 5.0 over loopback TCP with 64-byte payloads that carry"
  echo "  their send time; latency is publish to delivery."
  echo "- Publishers keep at most 1000 messages undelivered per subscriber (and at"
  echo "  QoS 1/2 unacknowledged), so each broker runs at the rate it sustains"
  echo "  instead of filling its queues; \"delivered msg/s\" is that rate, over the"
  echo "  publishing time. At QoS 1/2 a lost message is a failure; at QoS 0 a broker"
  echo "  may drop, and it is counted."
  echo "- Latency at full speed is mostly that backlog divided by the rate (Little's"
  echo "  law); the fixed-rate table compares latency at the same moderate load."
  echo "- mosquitto is configured with Edgeport's default limits"
  echo "  (\`max_inflight_messages 1024\`, \`max_queued_messages 10000\`) and"
  echo "  \`set_tcp_nodelay true\`, which Go sockets have by default; Edgeport runs"
  echo "  with its defaults."
  echo "- The ratio column is Edgeport ÷ mosquitto: above 1 is better for rates,"
  echo "  below 1 is better for latency and memory."
  for s in "${scenarios[@]}"; do
    IFS='|' read -r id title args <<<"$s"
    echo
    echo "## $title"
    echo
    case $id in
      idle) echo "\`edgeport bench --addr HOST:PORT $args\`; the broker's VmRSS is read from /proc before the run and 1 s after the last SUBACK." ;;
      *) echo "\`edgeport bench --addr HOST:PORT $args --duration $duration\`" ;;
    esac
    echo
    echo "| figure | mosquitto | Edgeport | ratio |"
    echo "|---|---:|---:|---:|"
    case $id in
      connstorm)
        row "connections per second" .conn_per_sec 0
        row "connect latency p50 (ms)" .latency.p50_ms 2
        row "connect latency p99 (ms)" .latency.p99_ms 2
        ;;
      idle)
        row "RSS per connection (KiB)" .rss_per_conn_kb 1
        row "RSS before (KiB)" .rss_before_kb 0
        row "RSS with $idle_conns connections (KiB)" .rss_after_kb 0
        row "set-up rate (connections+SUBACK per second)" .conn_per_sec 0
        ;;
      rate)
        row "delivered msg/s" .received_per_sec 0
        row "latency p50 (ms)" .latency.p50_ms 3
        row "latency p90 (ms)" .latency.p90_ms 3
        row "latency p99 (ms)" .latency.p99_ms 3
        row "latency p99.9 (ms)" .latency.p99_9_ms 3
        row "latency max (ms)" .latency.max_ms 3
        row "lost" .lost 0
        for broker in mosquitto edgeport; do
          d=$(median rate "$broker" .received_per_sec)
          if [ -n "$d" ] && awk -v d="$d" -v r="$rate" 'BEGIN { exit !(d < 0.95 * r) }'; then
            echo
            echo "$broker delivered $(num "$d") msg/s, short of the $rate msg/s offered: it did not sustain this rate, so its latency here is that of an overloaded broker."
          fi
        done
        ;;
      *)
        row "delivered msg/s" .received_per_sec 0
        row "published msg/s" .sent_per_sec 0
        row "latency p50 (ms)" .latency.p50_ms 2
        row "latency p99 (ms)" .latency.p99_ms 2
        row "lost (of expected)" .lost 0
        ;;
    esac
  done
} >"$out"

# Durability (Edgeport only: mosquitto persists by periodic snapshot, so it
# has no per-message durable path to compare with). QoS 1 into persistent
# sessions with the default group commit, against the same broker with
# --in-memory; then the recovery of a large queue.
log "durability: QoS 1 p2p 10 pairs into persistent sessions, durable vs in memory"
for round in $(seq "$rounds"); do
  run_one edgeport durable "$round" --scenario p2p --clients 10 --qos 1 --persistent
  log "  durable: $(summary "$tmp/res/durable/edgeport.$round.json")"
  EDGEPORT_SERVE_ARGS=--in-memory run_one edgeport memory "$round" --scenario p2p --clients 10 --qos 1 --persistent
  log "  in memory: $(summary "$tmp/res/memory/edgeport.$round.json")"
done
half=$(jq -n --argjson e "${e:-0}" '($e / 2) | floor')
log "latency: QoS 0 1->1 at $half msg/s, half of Edgeport's own 1->1 maximum"
for round in $(seq "$rounds"); do
  run_one edgeport halfmax "$round" --scenario p2p --clients 1 --qos 0 --rate "$half"
  log "  edgeport: $(summary "$tmp/res/halfmax/edgeport.$round.json")"
done
log "latency past saturation: QoS 0 1->1 open loop at 1.5x Edgeport's maximum and unthrottled"
over=$(jq -n --argjson e "${e:-0}" '($e * 1.5) | floor')
for round in $(seq "$rounds"); do
  run_one edgeport over "$round" --scenario p2p --clients 1 --qos 0 --open-loop --rate "$over"
  run_one edgeport flat "$round" --scenario p2p --clients 1 --qos 0 --open-loop
  log "  edgeport: $(summary "$tmp/res/over/edgeport.$round.json"); unthrottled $(summary "$tmp/res/flat/edgeport.$round.json")"
done
recovery_n=${RECOVERY_MESSAGES:-1000000}
[ "$quick" = 1 ] && recovery_n=${RECOVERY_MESSAGES:-50000}
log "durability: recovery of $recovery_n queued messages"
go build -o "$tmp/recovery" ./bench/recovery
timeout 600 "$tmp/recovery" -n "$recovery_n" >"$tmp/recovery.txt" 2>&1 || log "recovery run failed: $(tail -3 "$tmp/recovery.txt")"
{
  echo
  echo "## Durability: QoS 1 into persistent sessions (Edgeport only)"
  echo
  echo "\`edgeport bench --addr HOST:PORT --scenario p2p --clients 10 --qos 1 --persistent --duration $duration\` against \`edgeport serve\` (durable, \`--sync-policy batch\`: every PUBACK waits for a group-committed fsync) and \`edgeport serve --in-memory\`."
  echo
  echo "| figure | in memory | durable | ratio |"
  echo "|---|---:|---:|---:|"
  for f in "delivered msg/s|.received_per_sec|0" "latency p50 (ms)|.latency.p50_ms|2" "latency p99 (ms)|.latency.p99_ms|2" "lost (of expected)|.lost|0"; do
    IFS='|' read -r label field digits <<<"$f"
    m=$(median memory edgeport "$field")
    d=$(median durable edgeport "$field")
    ratio=n/a
    if [ -n "$m" ] && [ -n "$d" ] && awk -v m="$m" 'BEGIN { exit !(m > 0) }'; then
      ratio=$(awk -v m="$m" -v d="$d" 'BEGIN { printf "%.2f×", d / m }')
    fi
    printf '| %s | %s | %s | %s |\n' "$label" "$(printf "%.${digits}f" "${m:-0}")" "$(printf "%.${digits}f" "${d:-0}")" "$ratio"
  done
  echo
  echo "## Latency at half of Edgeport's own maximum (Edgeport only)"
  echo
  echo "\`edgeport bench --addr HOST:PORT --scenario p2p --clients 1 --qos 0 --rate $half --duration $duration\` ($half msg/s is half of Edgeport's median 1->1 rate above)."
  echo
  echo "| figure | Edgeport |"
  echo "|---|---:|"
  for f in "delivered msg/s|.received_per_sec|0" "latency p50 (ms)|.latency.p50_ms|3" "latency p99 (ms)|.latency.p99_ms|3" "latency p99.9 (ms)|.latency.p99_9_ms|3" "latency max (ms)|.latency.max_ms|3"; do
    IFS='|' read -r label field digits <<<"$f"
    v=$(median halfmax edgeport "$field")
    printf '| %s | %s |\n' "$label" "$(printf "%.${digits}f" "${v:-0}")"
  done
  echo
  echo "## Past saturation (Edgeport only)"
  echo
  echo "\`edgeport bench --addr HOST:PORT --scenario p2p --clients 1 --qos 0 --open-loop --rate $over --duration $duration\` (1.5× Edgeport's maximum) and the same without \`--rate\`: publishers ignore the delivery window and write as fast as TCP accepts. Latency settles where TCP backpressure and the per-connection outbound bound (\`MaxOutboundBytes\`, 8 MiB; QoS 0 beyond it is dropped and counted) put it, instead of growing with the run."
  echo
  echo "| figure | open loop at 1.5× max | open loop, unthrottled |"
  echo "|---|---:|---:|"
  for f in "delivered msg/s|.received_per_sec|0" "latency p50 (ms)|.latency.p50_ms|2" "latency p99 (ms)|.latency.p99_ms|2" "latency max (ms)|.latency.max_ms|2" "lost|.lost|0"; do
    IFS='|' read -r label field digits <<<"$f"
    o=$(median over edgeport "$field")
    u=$(median flat edgeport "$field")
    printf '| %s | %s | %s |\n' "$label" "$(printf "%.${digits}f" "${o:-0}")" "$(printf "%.${digits}f" "${u:-0}")"
  done
  echo
  echo "## Durability: a large queue, on disk and back (Edgeport only)"
  echo
  echo "\`go run ./bench/recovery -n $recovery_n\`: fills one persistent offline session with QoS 1 messages (64 random bytes each) through a TCP client, then restarts the broker on the same store."
  echo
  echo '```'
  cat "$tmp/recovery.txt"
  echo '```'
} >>"$out"
if [ -s "$kept" ]; then
  { echo; cat "$kept"; } >>"$out"
fi
log "wrote $out"
if [ "$quick" = 1 ]; then cat "$out"; fi
