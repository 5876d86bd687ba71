#!/usr/bin/env bash
# The order -> payment example against `mqbroker dev`: installs the official Python client
# (rocketmq-python-client==5.1.2) into a virtualenv, starts a three-node dev group on spare
# ports in a temporary directory, and runs the story in scenario.py.
# Usage: examples/order-payment/run.sh [path-to-mqbroker]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
mqbroker="${1:-$root/target/debug/mqbroker}"
venv="${RAFTMQ_PY_VENV:-$root/target/py-venv}"
client_port="${RAFTMQ_SHOP_CLIENT_PORT:-38081}"
raft_port="${RAFTMQ_SHOP_RAFT_PORT:-39081}"
namesrv_port="${RAFTMQ_SHOP_NAMESRV_PORT:-39876}"

if [ ! -x "$mqbroker" ]; then
    (cd "$root" && cargo build --bin mqbroker)
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "rocketmq-python-client==5.1.2"

work="$(mktemp -d)"
log="$work/mqbroker.log"
"$mqbroker" dev --data-dir "$work/data" --client-port "$client_port" --raft-port "$raft_port" --namesrv-port "$namesrv_port" >"$log" 2>&1 &
broker=$!
cleanup() {
    kill "$broker" 2>/dev/null || true
    wait "$broker" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

deadline=$((SECONDS + 60))
for port in "$client_port" "$((client_port + 1))" "$((client_port + 2))"; do
    until "$venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ] || ! kill -0 "$broker" 2>/dev/null; then
            echo "mqbroker dev did not come up; its log:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.2
    done
done

endpoints="127.0.0.1:$client_port;127.0.0.1:$((client_port + 1));127.0.0.1:$((client_port + 2))"
cd "$here"
if ! timeout 300 "$venv/bin/python" scenario.py "$endpoints" "$work"; then
    echo "the order -> payment example failed; mqbroker log tail:" >&2
    tail -n 50 "$log" >&2
    exit 1
fi
