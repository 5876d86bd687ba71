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

source "$root/tests/dev-group.sh"
start_dev_group "$mqbroker" "$client_port" "$raft_port" "$namesrv_port"
cd "$here"
if ! timeout 300 "$venv/bin/python" scenario.py "$endpoints" "$work"; then
    echo "the order -> payment example failed; mqbroker log tail:" >&2
    tail -n 50 "$log" >&2
    exit 1
fi
