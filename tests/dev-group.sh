# Sourced by the scripts that run a client against `mqbroker dev`: starts a three-node dev
# group on the given ports in a temporary directory, waits (with a deadline) until every
# node's client port accepts connections, and stops it and removes the directory on exit.
# Usage: source tests/dev-group.sh; start_dev_group MQBROKER CLIENT_PORT RAFT_PORT NAMESRV_PORT
# Sets `work` (the temporary directory), `log` (the group's log) and `endpoints`
# (`host:port;host:port;host:port`).

stop_dev_group() {
    kill "$dev_group_pid" 2>/dev/null || true
    wait "$dev_group_pid" 2>/dev/null || true
    rm -rf "$work"
}

start_dev_group() {
    local mqbroker="$1" client_port="$2" raft_port="$3" namesrv_port="$4"
    work="$(mktemp -d)"
    log="$work/mqbroker.log"
    "$mqbroker" dev --data-dir "$work/data" --client-port "$client_port" --raft-port "$raft_port" \
        --namesrv-port "$namesrv_port" >"$log" 2>&1 &
    dev_group_pid=$!
    trap stop_dev_group EXIT
    local deadline=$((SECONDS + 60)) port
    for port in "$client_port" "$((client_port + 1))" "$((client_port + 2))"; do
        until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
            if [ $SECONDS -ge $deadline ] || ! kill -0 "$dev_group_pid" 2>/dev/null; then
                echo "mqbroker dev did not come up; its log:" >&2
                cat "$log" >&2
                exit 1
            fi
            sleep 0.2
        done
    done
    endpoints="127.0.0.1:$client_port;127.0.0.1:$((client_port + 1));127.0.0.1:$((client_port + 2))"
}
