#!/usr/bin/env bash
# Runs the official RocketMQ 5 Python client against `mqbroker dev`: installs
# rocketmq-python-client==5.1.2 from PyPI into a virtualenv, starts a three-node dev group
# on spare ports in a temporary directory (RAFTMQ_GROUP=processes: a nameserver and three
# `mqbroker --config` processes instead), and runs official_client.py against it.
# Usage: tests/python/run.sh [path-to-mqbroker]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
mqbroker="${1:-$root/target/debug/mqbroker}"
venv="${RAFTMQ_PY_VENV:-$root/target/py-venv}"
client_port="${RAFTMQ_PY_CLIENT_PORT:-18081}"
raft_port="${RAFTMQ_PY_RAFT_PORT:-19081}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "rocketmq-python-client==5.1.2"

source "$root/tests/dev-group.sh"
start_dev_group "$mqbroker" "$client_port" "$raft_port" "${RAFTMQ_PY_NAMESRV_PORT:-19876}"
if ! RAFTMQ_MQADMIN="${RAFTMQ_MQADMIN:-$(dirname "$mqbroker")/mqadmin}" timeout 300 "$venv/bin/python" "$here/official_client.py" "$endpoints"; then
    echo "official client test failed; mqbroker log tail:" >&2
    tail -n 50 "$log" >&2
    exit 1
fi
