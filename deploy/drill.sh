#!/usr/bin/env bash
# Fault drills against the three-node group of deploy/docker-compose.yml: for each scenario,
# a fresh cluster, a recorded workload (closed-loop producers and a consumer group, from the
# host), the fault, the heal, the drain, then `mqadmin check` over the records: every
# invariant with its count, the unavailability the fault caused, and whether the members
# hold the same log. Exits non-zero if any invariant fails.
#
# Usage: deploy/drill.sh [SCENARIO...]
#   kill-leader       kill -9 the leader (DRILL_KILLS times, restarting it after each)
#   kill-follower     kill -9 a follower, restart it
#   pause-leader      docker pause the leader for DRILL_PAUSE seconds
#   partition-leader  cut the leader off from the other two (iptables in its network
#                     namespace; clients still reach it) for DRILL_PARTITION seconds, heal
#   no-fault          DRILL_LOAD_PRODUCERS (64) producers for DRILL_SECONDS (30) and no fault:
#                     fails if the group held any election (timeouts too short for the load)
#   all               every scenario above
# With no scenario: the short set CI runs (kill-leader with two kills, partition-leader).
#
# Settings (environment): DRILL_CLIENT (rust: `mqadmin bench produce`; python: the official
# Python client, deploy/python-producer.py, in a virtualenv made on first use),
# DRILL_PRODUCERS (16), DRILL_CONSUMERS (4), DRILL_KILLS (2; 10 for the failover figure),
# DRILL_PAUSE (4), DRILL_PARTITION (6), DRILL_BUILD=0 to use the image
# and binaries already built, DRILL_OUT (where records and logs go; default a temporary
# directory, kept when a drill fails).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
compose_file="$root/deploy/docker-compose.yml"
project=raftmq-drill
producers="${DRILL_PRODUCERS:-16}"
consumers="${DRILL_CONSUMERS:-4}"
kills="${DRILL_KILLS:-2}"
pause_s="${DRILL_PAUSE:-4}"
partition_s="${DRILL_PARTITION:-6}"
topic=DrillTopic
group=DrillGroup
# The members' client endpoints on the compose network (a Linux host reaches them).
declare -A ip=([node1]=172.28.0.11 [node2]=172.28.0.12 [node3]=172.28.0.13)
members="172.28.0.11:8081;172.28.0.12:8081;172.28.0.13:8081"

say() { printf 'drill: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}
now_ms() { date +%s%3N; }
compose() { docker-compose -p "$project" -f "$compose_file" "$@"; }

scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
    scenarios=(kill-leader partition-leader)
elif [ "${scenarios[0]}" = all ]; then
    scenarios=(no-fault kill-leader kill-follower pause-leader partition-leader)
fi
for s in "${scenarios[@]}"; do
    case "$s" in
        kill-leader | kill-follower | pause-leader | partition-leader | no-fault) ;;
        *) die "unknown scenario $s (see the usage at the top of $0)" ;;
    esac
done

for tool in docker docker-compose python3 nsenter iptables; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH"
done

triple="$(rustc -vV | sed -n 's/^host: //p')"
mqadmin="${CARGO_TARGET_DIR:-$root/target}/$triple/release/mqadmin"
if [ "${DRILL_BUILD:-1}" = 1 ]; then
    "$root/deploy/build-image.sh"
fi
[ -x "$mqadmin" ] || die "$mqadmin is missing: run deploy/build-image.sh first"
admin() { "$mqadmin" --endpoints "$members" "$@"; }

client="${DRILL_CLIENT:-rust}"
case "$client" in
    rust) ;;
    python)
        py_venv="${RAFTMQ_PY_VENV:-$root/target/py-venv}"
        if [ ! -x "$py_venv/bin/python" ]; then
            python3 -m venv "$py_venv"
        fi
        "$py_venv/bin/python" -m pip install --quiet --disable-pip-version-check "rocketmq-python-client==5.1.2"
        ;;
    *) die "DRILL_CLIENT is rust or python, not $client" ;;
esac

out="${DRILL_OUT:-$(mktemp -d)}"
mkdir -p "$out"
say "records and logs in $out"

cleanup() {
    local pid
    for pid in $(jobs -p); do
        kill "$pid" 2>/dev/null || true
    done
    compose down -v --remove-orphans >/dev/null 2>&1 || true
}
trap cleanup EXIT

container() { compose ps -q "$1"; }

# The service name of the group's leader, as the members see it (waits up to 30 s).
leader() {
    local deadline=$((SECONDS + 30)) id
    while [ $SECONDS -lt $deadline ]; do
        id="$(admin cluster list 2>/dev/null | awk '$3 == "LEADER" { print $2; exit }')" || true
        if [ -n "$id" ]; then
            echo "node$id"
            return
        fi
        sleep 0.2
    done
    die "no leader within 30 s"
}

# The highest Raft term any member reports.
term() {
    admin cluster list 2>/dev/null | awk 'NR > 1 && $4 ~ /^[0-9]+$/ && $4 > t { t = $4 } END { print t + 0 }'
}

# Waits until every container of the project reports healthy.
wait_healthy() {
    local deadline=$((SECONDS + 90)) s c status all
    while :; do
        all=1
        for s in namesrv node1 node2 node3; do
            c="$(container "$s")"
            status="$(docker inspect -f '{{.State.Health.Status}}' "$c" 2>/dev/null || echo missing)"
            [ "$status" = healthy ] || all=0
        done
        [ $all = 1 ] && return
        [ $SECONDS -lt $deadline ] || {
            compose ps >&2
            die "the cluster was not healthy within 90 s"
        }
        sleep 0.5
    done
}

# Runs a command in the network namespace of a service's container.
in_netns() {
    local service="$1" pid
    shift
    pid="$(docker inspect -f '{{.State.Pid}}' "$(container "$service")")"
    nsenter -t "$pid" -n "$@"
}

# Drops the Raft traffic between a service and the other members (clients still reach it).
cut_off() {
    local service="$1" other
    for other in node1 node2 node3; do
        [ "$other" = "$service" ] && continue
        in_netns "$service" iptables -I INPUT -s "${ip[$other]}" -j DROP
        in_netns "$service" iptables -I OUTPUT -d "${ip[$other]}" -j DROP
    done
}

heal_cut() {
    in_netns "$1" iptables -F INPUT
    in_netns "$1" iptables -F OUTPUT
}

failed=0
summary=()

run_scenario() {
    local scenario="$1" dir="$out/$1"
    mkdir -p "$dir"
    say "== $scenario ($client producers): fresh cluster"
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    compose up -d >"$dir/compose-up.log" 2>&1 || {
        cat "$dir/compose-up.log" >&2
        die "docker-compose up failed"
    }
    wait_healthy
    admin topic create "$topic" --queues 8 >/dev/null
    admin group update "$group" >/dev/null

    # The workload: a consumer group draining, and producers until the faults are over.
    "$mqadmin" --endpoints "$members" bench consume --topic "$topic" --group "$group" \
        --consumers "$consumers" --seconds 900 --record "$dir/deliveries" --quiet --json \
        >"$dir/consume.json" 2>"$dir/consume.err" &
    local consumer_pid=$!
    local n_producers="$producers" term_before term_after
    [ "$scenario" = no-fault ] && n_producers="${DRILL_LOAD_PRODUCERS:-64}"
    term_before="$(term)"
    if [ "$client" = python ]; then
        "$py_venv/bin/python" "$root/deploy/python-producer.py" "$members" "$topic" "$dir/sends" "$n_producers" \
            >"$dir/produce.json" 2>"$dir/produce.err" &
    else
        "$mqadmin" --endpoints "$members" bench produce --topic "$topic" --producers "$n_producers" \
            --seconds 3600 --record "$dir/sends" --json --quiet >"$dir/produce.json" 2>"$dir/produce.err" &
    fi
    local producer_pid=$!
    sleep 5

    local faults=() heals=() victim i
    case "$scenario" in
        kill-leader)
            for ((i = 1; i <= kills; i++)); do
                victim="$(leader)"
                say "kill -9 of the leader $victim ($i of $kills)"
                docker kill -s KILL "$(container "$victim")" >/dev/null
                faults+=("$(now_ms)")
                leader >/dev/null
                sleep 3
                docker start "$(container "$victim")" >/dev/null
                heals+=("$(now_ms)")
                wait_healthy
                sleep 3
            done
            ;;
        kill-follower)
            victim="$(leader)"
            victim="$(printf '%s\n' node1 node2 node3 | grep -v "^$victim$" | head -n 1)"
            say "kill -9 of the follower $victim"
            docker kill -s KILL "$(container "$victim")" >/dev/null
            faults+=("$(now_ms)")
            sleep 5
            docker start "$(container "$victim")" >/dev/null
            heals+=("$(now_ms)")
            wait_healthy
            ;;
        pause-leader)
            victim="$(leader)"
            say "docker pause of the leader $victim for $pause_s s"
            docker pause "$(container "$victim")" >/dev/null
            faults+=("$(now_ms)")
            sleep "$pause_s"
            docker unpause "$(container "$victim")" >/dev/null
            heals+=("$(now_ms)")
            wait_healthy
            ;;
        partition-leader)
            victim="$(leader)"
            say "cutting the leader $victim off from the other two for $partition_s s"
            cut_off "$victim"
            faults+=("$(now_ms)")
            sleep "$partition_s"
            heal_cut "$victim"
            heals+=("$(now_ms)")
            wait_healthy
            ;;
        no-fault)
            say "no fault: $n_producers producers for ${DRILL_SECONDS:-30} s"
            sleep "${DRILL_SECONDS:-30}"
            ;;
    esac

    # Some sends after the heal, then the producers stop (finishing what is in flight).
    sleep 5
    kill -TERM "$producer_pid"
    wait "$producer_pid" || say "the producers ended with an error (see $dir/produce.err)"
    kill -TERM "$consumer_pid"
    wait "$consumer_pid" || say "the consumers ended with an error (see $dir/consume.err)"
    term_after="$(term)"
    local elections=$((term_after - term_before))
    say "elections during $scenario: $elections (term $term_before -> $term_after)"

    printf '%s\n' "${faults[@]}" >"$dir/faults"
    printf '%s\n' "${heals[@]}" >"$dir/heals"
    local args=(--sends "$dir/sends" --deliveries "$dir/deliveries" --members "$members" --json)
    for i in "${!faults[@]}"; do
        args+=(--fault-at-ms "${faults[$i]}" --healed-at-ms "${heals[$i]}")
    done
    say "checking the records of $scenario"
    local status=ok
    if ! "$mqadmin" check "${args[@]}" | tee "$dir/check.txt"; then
        status=FAILED
        failed=1
    fi
    if [ "$scenario" = no-fault ] && [ "$elections" -ne 0 ]; then
        say "FAILED: $elections elections without a fault: the election timeout is too short for this load"
        status=FAILED
        failed=1
    fi
    compose logs --no-color >"$dir/cluster.log" 2>&1 || true
    local line
    line="$(tail -n 2 "$dir/check.txt" | grep '^{' || true)"
    summary+=("$scenario $status elections $elections, $(python3 - "$line" <<'PY'
import json, sys
try:
    c = json.loads(sys.argv[1])
except ValueError:
    print("(no figures)")
    sys.exit()
inv = c["invariants"]
lost = inv.get("acknowledged, never delivered (lost)")
twice = inv.get("message ids stored at two positions (send retried)")
w, a = c.get("longest_wait_ms"), c.get("first_ack_after_fault_ms")
fmt = lambda d: "-" if d is None else "median %.0f ms, worst %.0f ms" % (d["median"], d["max"])
print("acked %d, failed sends %d, lost %s, stored twice %s, longest wait %s, first ack after fault %s"
      % (c["acked"], c["failed_sends"], lost, twice, fmt(w), fmt(a)))
PY
)")
}

for s in "${scenarios[@]}"; do
    run_scenario "$s"
done

printf '\n== drill summary\n'
printf '%s\n' "${summary[@]}"
if [ $failed = 1 ]; then
    say "an invariant failed; records and logs kept in $out"
    trap - EXIT
    cleanup
    exit 1
fi
[ -z "${DRILL_OUT:-}" ] && rm -rf "$out"
exit 0
