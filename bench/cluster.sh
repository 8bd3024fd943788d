#!/usr/bin/env bash
# The cost of cluster mode: the same `edgeport bench` scenarios against one
# `edgeport serve` (no NATS) and against three `edgeport serve --cluster`
# nodes on this machine (loopback, own data directories and ports), in the
# same run, alternating which goes first, ROUNDS times. On the cluster each
# messaging scenario runs twice: every subscriber on its publisher's node,
# and every subscriber on another node (each message crosses nodes).
#
#   bench/cluster.sh                  5 s per scenario, 3 rounds (~10 minutes)
#   QUICK=1 bench/cluster.sh          smoke run: 1 s, 1 round
#   ROUNDS=5 DURATION=10s OUT=/tmp/cluster.md bench/cluster.sh
#   EDGEPORT_BIN=/path/to/edgeport bench/cluster.sh   use that build
#   ONLY='^ss' bench/cluster.sh       only the scenarios whose id matches
#
# Prints a Markdown section for BENCHMARKS.md (and writes it to OUT when
# set). Each figure is the median of the rounds with their range; a ratio
# is cluster ÷ single node within one round (the two setups measured back
# to back), given as the median and range of the rounds' ratios. Needs Go
# (unless EDGEPORT_BIN) and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=${QUICK:-0}
if [ "$quick" = 1 ]; then
  rounds=${ROUNDS:-1}
  duration=${DURATION:-1s}
else
  rounds=${ROUNDS:-3}
  duration=${DURATION:-5s}
fi
if ! [[ $duration =~ ^[0-9]+s$ ]]; then
  echo "DURATION must be whole seconds, like 5s" >&2
  exit 2
fi
run_timeout=$((${duration%s} + 90))
out=${OUT:-}
# The fixed rates of the latency rows (msg/s over all publishers) and of
# the takeovers (session moves per second over all sessions): moderate
# loads that one node and the cluster both sustain on a small machine.
rate=${RATE:-5000}
moves=${MOVES:-50}

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
command -v jq >/dev/null || { echo "bench/cluster.sh needs jq (apt-get install jq)" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  stop_all
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${EDGEPORT_BIN:-}" ]; then
  bin=$EDGEPORT_BIN
else
  log "building edgeport"
  go build -o "$tmp/edgeport" ./cmd/edgeport
  bin=$tmp/edgeport
fi

accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# free_port: sets port to a route port (nats-server cannot bind port 0
# and report it), below the kernel's ephemeral range, where the machine's
# outgoing connections cannot take it between this check and the bind,
# and reserved as the Go tests reserve theirs (internal/testserve: an
# exclusive lock on $TMPDIR/edgeport-test-ports/PORT, here held until the
# script ends): TestClusterBenchScript runs this script while other test
# binaries pick route ports in the same range, and a port free a moment
# ago may be one a test picked but has not bound yet. Not called in $(...):
# the lock lives as long as the shell that took it.
eph_low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
port_locks=${TMPDIR:-/tmp}/edgeport-test-ports
mkdir -p "$port_locks"
chmod 0777 "$port_locks" 2>/dev/null || true
free_port() {
  local p fd
  while :; do
    p=$((20000 + RANDOM % (eph_low - 20000)))
    exec {fd}>>"$port_locks/$p" || continue
    if flock -n "$fd" && ! accepts "$p"; then
      port=$p
      return
    fi
    exec {fd}>&-
  done
}
# log_addr LOG LISTENER: the address a node logged for a listener.
log_addr() { grep -o "msg=listening listener=$2 addr=[0-9.:]*" "$1" | head -1 | sed 's/.*addr=//' || true; }
ready() { # HOST:PORT: /readyz answers 200
  local line
  line=$( (exec 3<>"/dev/tcp/${1%:*}/${1##*:}" && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 && head -1 <&3) 2>/dev/null || true)
  [[ $line == *" 200 "* ]]
}

# start SETUP: starts one node ("single") or three ("cluster") with fresh
# data directories, waits until each serves MQTT, is ready (a cluster node
# is ready once it has joined a JetStream quorum) and accepts a client,
# and sets servers to their MQTT addresses, comma-separated.
start() {
  local setup=$1 n=1 i routes="" args
  [ "$setup" = cluster ] && n=3
  rm -rf "$tmp/$setup"
  mkdir -p "$tmp/$setup"
  if [ "$setup" = cluster ]; then
    local r=() p
    while [ ${#r[@]} -lt $n ]; do
      free_port
      p="127.0.0.1:$port"
      [[ " ${r[*]} " == *" $p "* ]] || r+=("$p")
    done
    routes=$(IFS=,; echo "${r[*]}")
  fi
  for i in $(seq $n); do
    args=(serve --mqtt-addr 127.0.0.1:0 --ws-addr off --http-addr 127.0.0.1:0 --data-dir "$tmp/$setup/d$i")
    if [ "$setup" = cluster ]; then
      args+=(--cluster --node-name "n$i" --cluster-listen "$(echo "$routes" | cut -d, -f"$i")" --routes "$routes")
    fi
    "$bin" "${args[@]}" >"$tmp/$setup/log$i" 2>&1 &
    pids+=($!)
  done
  local addrs=() mqtt http
  for i in $(seq $n); do
    mqtt="" http=""
    for _ in $(seq 600); do
      mqtt=$(log_addr "$tmp/$setup/log$i" mqtt)
      http=$(log_addr "$tmp/$setup/log$i" http)
      if [ -n "$mqtt" ] && [ -n "$http" ] && ready "$http"; then break; fi
      mqtt=""
      kill -0 "${pids[$((${#pids[@]} - n + i - 1))]}" 2>/dev/null || break
      sleep 0.1
    done
    if [ -z "$mqtt" ]; then
      log "$setup node $i did not become ready:"
      tail -20 "$tmp/$setup/log$i" >&2
      return 1
    fi
    addrs+=("$mqtt")
  done
  servers=$(IFS=,; echo "${addrs[*]}")
  # Ready means a CONNECT is accepted (TestClusterReadyzMeansConnect); kept
  # as a check that every node accepts one before measuring.
  local until=$((SECONDS + 60))
  until "$bin" bench --servers "$servers" --scenario connstorm --clients $n -o json --progress=false >/dev/null 2>"$tmp/$setup/probe.err"; do
    if [ $SECONDS -ge $until ]; then
      log "$setup: a node still refuses clients after 60 s: $(tail -1 "$tmp/$setup/probe.err")"
      return 1
    fi
    sleep 0.2
  done
}

# Scenarios: id|title|bench arguments. Messaging scenarios run on the
# cluster with subscribers on the same node ("same") and on the next
# node ("cross"); takeover runs once on each setup.
scenarios=(
  "q0|QoS 0, p2p 10 pairs, as fast as possible|--scenario p2p --clients 10 --qos 0"
  "q0r|QoS 0, p2p 10 pairs at a fixed $rate msg/s|--scenario p2p --clients 10 --qos 0 --rate $rate"
  "q1|QoS 1, p2p 10 pairs, as fast as possible|--scenario p2p --clients 10 --qos 1"
  "q1p|QoS 1 into persistent sessions (Clean Start 0), p2p 10 pairs, as fast as possible|--scenario p2p --clients 10 --qos 1 --persistent"
  "q1r|QoS 1, p2p 10 pairs at a fixed $rate msg/s|--scenario p2p --clients 10 --qos 1 --rate $rate"
  "q1pr|QoS 1 into persistent sessions, p2p 10 pairs at a fixed $rate msg/s|--scenario p2p --clients 10 --qos 1 --persistent --rate $rate"
  "takeover|session takeover, 10 persistent sessions, $moves moves/s|--scenario takeover --clients 10 --rate $moves"
  "ssset|state store SET, 16 clients (spread over the nodes) × 16 in flight|--scenario statestore --clients 16 --window 16"
  "ssget|state store GET, 16 clients × 16 in flight|--scenario statestore --clients 16 --window 16 --gets 100"
  "ssmix|state store 90% GET / 10% SET, 16 clients × 16 in flight|--scenario statestore --clients 16 --window 16 --gets 90"
)
if [ -n "${ONLY:-}" ]; then
  kept=()
  for s in "${scenarios[@]}"; do
    [[ ${s%%|*} =~ $ONLY ]] && kept+=("$s")
  done
  scenarios=("${kept[@]}")
fi

# bench SETUP VARIANT ID ROUND ARGS...: one run, its JSON kept in
# $tmp/res/ID/SETUP-VARIANT.ROUND.json; a failed run leaves no file.
bench() {
  local setup=$1 variant=$2 id=$3 round=$4
  shift 4
  mkdir -p "$tmp/res/$id"
  local json=$tmp/res/$id/$setup-$variant.$round.json rc=0 where=(--servers "$servers")
  [ "$variant" = cross ] && where+=(--cross)
  timeout "$run_timeout" "$bin" bench "${where[@]}" --duration "$duration" -o json --progress=false "$@" \
    >"$json.tmp" 2>"$json.err" || rc=$?
  # Exit status 2: QoS 1 deliveries were lost; the result stands and shows it.
  if [ $rc = 0 ] || [ $rc = 2 ]; then mv "$json.tmp" "$json"; else rm -f "$json.tmp"; fi
  if [ -s "$json" ]; then
    log "  $setup $variant: $(jq -r 'if .scenario == "takeover" then "\(.takeovers // 0) takeovers, \(.errors // 0) failed, to 0x8E p50 \(.latency.p50_ms) p99 \(.latency.p99_ms) ms"
      elif .scenario == "statestore" then "\(.sets_per_sec // 0 | floor) SET/s, \(.gets_per_sec // 0 | floor) GET/s, \(.errors // 0) errors"
      else "\(.received_per_sec | floor) msg/s, p50 \(.latency.p50_ms) p99 \(.latency.p99_ms) ms, lost \(.lost)" end' "$json")"
  else
    log "  $setup $variant: FAILED (exit $rc): $(tail -3 "$json.err" | tr '\n' ' ')"
  fi
}

loads=()
for round in $(seq "$rounds"); do
  order="single cluster"
  [ $((round % 2)) = 0 ] && order="cluster single"
  for setup in $order; do
    loads+=("$(cut -d' ' -f1 /proc/loadavg)")
    log "round $round/$rounds: $setup (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    if ! start "$setup"; then
      stop_all
      continue
    fi
    for s in "${scenarios[@]}"; do
      IFS='|' read -r id title args <<<"$s"
      log " $title"
      variants=same
      [ "$setup" = cluster ] && [ "$id" != takeover ] && [[ $id != ss* ]] && variants="same cross"
      for v in $variants; do
        # shellcheck disable=SC2086
        bench "$setup" "$v" "$id" "$round" $args
      done
    done
    stop_all
  done
done
loads+=("$(cut -d' ' -f1 /proc/loadavg)")

# ---- report ----
# stat ID SETUP-VARIANT JQ DIGITS: "median (min–max)" of a figure over the
# rounds; a figure that is null (a latency without samples) is left out.
stat() {
  local files=("$tmp/res/$1/$2".*.json)
  [ -e "${files[0]}" ] || { echo "failed"; return; }
  jq -rs --argjson d "$4" "[.[] | $3 | select(. != null)] | sort |
    def f: if \$d == 0 then floor else . * pow(10; \$d) | round / pow(10; \$d) end;
    if length == 0 then \"n/a\" else
    (if length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end) as \$m |
    if length == 1 then \"\(\$m | f)\" else \"\(\$m | f) (\(.[0] | f)–\(.[-1] | f))\" end end" "${files[@]}"
}
# ratio ID SETUP-VARIANT JQ: cluster ÷ single node per round, "median (min–max)×".
ratio() {
  local id=$1 v=$2 expr=$3 r rs=()
  for round in $(seq "$rounds"); do
    local a=$tmp/res/$id/single-same.$round.json b=$tmp/res/$id/$v.$round.json
    [ -s "$a" ] && [ -s "$b" ] || continue
    r=$(jq -rn --slurpfile a "$a" --slurpfile b "$b" "(\$a[0] | $expr) as \$x | (\$b[0] | $expr) as \$y | if \$x == null or \$y == null or \$x == 0 then empty else \$y / \$x end")
    [ -n "$r" ] && rs+=("$r")
  done
  [ ${#rs[@]} -gt 0 ] || { echo "n/a"; return; }
  printf '%s\n' "${rs[@]}" | jq -rs 'sort | def f: . * 100 | round / 100;
    (if length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end) as $m |
    if length == 1 then "\($m | f)×" else "\($m | f)× (\(.[0] | f)–\(.[-1] | f))" end'
}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -z "${EDGEPORT_BIN:-}" ] && [ -n "$(git status --porcelain -- cmd internal 2>/dev/null || true)" ]; then
  commit="$commit (with uncommitted changes)"
fi
cmdline="bench/cluster.sh"
[ "$quick" = 1 ] && cmdline="QUICK=1 $cmdline"
[ -n "${ROUNDS:-}" ] && cmdline="ROUNDS=$ROUNDS $cmdline"
[ -n "${DURATION:-}" ] && cmdline="DURATION=$DURATION $cmdline"
[ -n "${RATE:-}" ] && cmdline="RATE=$RATE $cmdline"
[ -n "${MOVES:-}" ] && cmdline="MOVES=$MOVES $cmdline"
[ -n "${ONLY:-}" ] && cmdline="ONLY='$ONLY' $cmdline"
lmin=$(printf '%s\n' "${loads[@]}" | sort -n | head -1)
lmax=$(printf '%s\n' "${loads[@]}" | sort -n | tail -1)

report() {
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') with \`$cmdline\`: Edgeport $commit, $(nproc) CPUs"
  echo "($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), $rounds round(s) of $duration per run, one-minute load"
  echo "average $lmin–$lmax over the run. Figures: median (min–max) over the rounds; ratios: cluster ÷"
  echo "single node within each round, median (min–max)."
  for s in "${scenarios[@]}"; do
    IFS='|' read -r id title args <<<"$s"
    echo
    echo "### $title"
    echo
    echo "\`edgeport bench --servers ADDRS $args --duration $duration\`"
    echo
    if [ "$id" = takeover ]; then
      echo "| figure | single node | 3-node cluster | ratio |"
      echo "|---|---:|---:|---:|"
      for f in "takeovers|(.takeovers // 0)|0|-" "failed|(.errors // 0)|0|-" "old connection closed without DISCONNECT 0x8E|(.takeovers_untold // 0)|0|-" \
        "to old 0x8E p50 (ms)|(if .latency.samples > 0 then .latency.p50_ms else null end)|2" \
        "to old 0x8E p99 (ms)|(if .latency.samples > 0 then .latency.p99_ms else null end)|2" \
        "to CONNACK p50 (ms)|(if .latency.samples > 0 then .connack_latency.p50_ms else null end)|2" \
        "to CONNACK p99 (ms)|(if .latency.samples > 0 then .connack_latency.p99_ms else null end)|2"; do
        IFS='|' read -r label expr d noratio <<<"$f"
        r=""
        [ -z "$noratio" ] && r=$(ratio "$id" cluster-same "$expr")
        echo "| $label | $(stat "$id" single-same "$expr" "$d") | $(stat "$id" cluster-same "$expr" "$d") | $r |"
      done
      continue
    fi
    if [[ $id == ss* ]]; then
      echo "| figure | single node | 3-node cluster | ratio |"
      echo "|---|---:|---:|---:|"
      figs=()
      [ "$id" != ssget ] && figs+=("SET/s|(.sets_per_sec // 0)|0" "SET p50 (ms)|.set_latency.p50_ms|2" "SET p99 (ms)|.set_latency.p99_ms|2")
      [ "$id" != ssset ] && figs+=("GET/s|(.gets_per_sec // 0)|0" "GET p50 (ms)|.get_latency.p50_ms|2" "GET p99 (ms)|.get_latency.p99_ms|2")
      for f in "${figs[@]}" "errors|(.errors // 0)|0|-"; do
        IFS='|' read -r label expr d noratio <<<"$f"
        r=""
        [ -z "$noratio" ] && r=$(ratio "$id" cluster-same "$expr")
        echo "| $label | $(stat "$id" single-same "$expr" "$d") | $(stat "$id" cluster-same "$expr" "$d") | $r |"
      done
      continue
    fi
    echo "| figure | single node | cluster, same node | ratio | cluster, other node | ratio |"
    echo "|---|---:|---:|---:|---:|---:|"
    for f in "delivered msg/s|.received_per_sec|0" "latency p50 (ms)|.latency.p50_ms|2" "latency p99 (ms)|.latency.p99_ms|2" "lost|.lost|0|-"; do
      IFS='|' read -r label expr d noratio <<<"$f"
      r1="" r2=""
      if [ -z "$noratio" ]; then
        r1=$(ratio "$id" cluster-same "$expr")
        r2=$(ratio "$id" cluster-cross "$expr")
      fi
      echo "| $label | $(stat "$id" single-same "$expr" "$d") | $(stat "$id" cluster-same "$expr" "$d") | $r1 | $(stat "$id" cluster-cross "$expr" "$d") | $r2 |"
    done
  done
}
if [ -n "$out" ]; then report | tee "$out"; else report; fi
