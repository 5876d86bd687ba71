# Sourced by the scripts that run a client against a group: starts a three-node group on
# the given ports in a temporary directory, waits (with a deadline) until every node's
# client port accepts connections and a leader is elected, and stops it and removes the
# directory on exit. The group is `mqbroker dev` (one process), or, with RAFTMQ_GROUP=processes, a nameserver
# (`mqnamesrv`) and three `mqbroker --config` processes, as a deployment runs them.
# Usage: source tests/dev-group.sh; start_dev_group MQBROKER CLIENT_PORT RAFT_PORT NAMESRV_PORT
# Sets `work` (the temporary directory), `log` (the group's log, every process's lines)
# and `endpoints` (`host:port;host:port;host:port`).

stop_dev_group() {
    local pid
    for pid in $dev_group_pid; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $dev_group_pid; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}

# Starts the nameserver and three `mqbroker --config` processes (MQBROKER's directory holds
# mqnamesrv too); sets `dev_group_pid` to their pids.
start_process_group() {
    local mqbroker="$1" client_port="$2" raft_port="$3" namesrv_port="$4" id
    "$(dirname "$mqbroker")/mqnamesrv" --listen "127.0.0.1:$namesrv_port" >>"$log" 2>&1 &
    dev_group_pid="$!"
    for id in 1 2 3; do
        cat >"$work/node-$id.toml" <<TOML
group = "broker-a"
node_id = $id
data_dir = "$work/data/node-$id"
nameservers = ["127.0.0.1:$namesrv_port"]
[[peers]]
id = 1
raft = "127.0.0.1:$raft_port"
client = "127.0.0.1:$client_port"
[[peers]]
id = 2
raft = "127.0.0.1:$((raft_port + 1))"
client = "127.0.0.1:$((client_port + 1))"
[[peers]]
id = 3
raft = "127.0.0.1:$((raft_port + 2))"
client = "127.0.0.1:$((client_port + 2))"
TOML
        "$mqbroker" --config "$work/node-$id.toml" >>"$log" 2>&1 &
        dev_group_pid="$dev_group_pid $!"
    done
}

start_dev_group() {
    local mqbroker="$1" client_port="$2" raft_port="$3" namesrv_port="$4"
    work="$(mktemp -d)"
    log="$work/mqbroker.log"
    : >"$log"
    if [ "${RAFTMQ_GROUP:-dev}" = processes ]; then
        start_process_group "$mqbroker" "$client_port" "$raft_port" "$namesrv_port"
    else
        "$mqbroker" dev --data-dir "$work/data" --client-port "$client_port" --raft-port "$raft_port" \
            --namesrv-port "$namesrv_port" >"$log" 2>&1 &
        dev_group_pid=$!
    fi
    trap stop_dev_group EXIT
    local deadline=$((SECONDS + 60)) port
    for port in "$client_port" "$((client_port + 1))" "$((client_port + 2))"; do
        until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
            # shellcheck disable=SC2086 # one pid or several
            if [ $SECONDS -ge $deadline ] || ! kill -0 $dev_group_pid 2>/dev/null; then
                echo "the group did not come up; its log:" >&2
                cat "$log" >&2
                exit 1
            fi
            sleep 0.2
        done
    done
    endpoints="127.0.0.1:$client_port;127.0.0.1:$((client_port + 1));127.0.0.1:$((client_port + 2))"
    # Separate processes open their ports before they have elected a leader: wait for one
    # (clients fetch a route once at start and give up after a few seconds).
    local mqadmin
    mqadmin="$(dirname "$mqbroker")/mqadmin"
    if [ -x "$mqadmin" ]; then
        until "$mqadmin" --endpoints "$endpoints" cluster list 2>/dev/null | grep -q " LEADER "; do
            if [ $SECONDS -ge $deadline ]; then
                echo "the group elected no leader in time; its log:" >&2
                cat "$log" >&2
                exit 1
            fi
            sleep 0.2
        done
    fi
}
