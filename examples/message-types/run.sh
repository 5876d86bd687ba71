#!/usr/bin/env bash
# Runs the Rust client's example per message type and consumption mode (client/examples:
# normal, fifo, delay, transaction, broadcast, filter, push) against a three-node `mqbroker dev`
# group on spare ports in a temporary directory (RAFTMQ_GROUP=processes: a nameserver and
# three `mqbroker --config` processes); each example checks its own promise and
# exits non-zero when it is broken.
# Usage: examples/message-types/run.sh [path-to-mqbroker]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
mqbroker="${1:-$root/target/debug/mqbroker}"
client_port="${RAFTMQ_EXAMPLES_CLIENT_PORT:-48081}"
raft_port="${RAFTMQ_EXAMPLES_RAFT_PORT:-49081}"
namesrv_port="${RAFTMQ_EXAMPLES_NAMESRV_PORT:-49876}"
examples=(normal fifo delay transaction broadcast filter push)

if [ ! -x "$mqbroker" ]; then
    (cd "$root" && cargo build --bin mqbroker)
fi
# RAFTMQ_BUILT=1 (set by .ci/run): the workspace is built, examples included.
if [ "${RAFTMQ_BUILT:-0}" != 1 ]; then
    (cd "$root" && cargo build -p raftmq-client --examples --locked)
fi

source "$root/tests/dev-group.sh"
start_dev_group "$mqbroker" "$client_port" "$raft_port" "$namesrv_port"
for example in "${examples[@]}"; do
    echo "--- example: $example"
    if ! timeout 120 "$root/target/debug/examples/$example" "$endpoints"; then
        echo "example $example failed; mqbroker log tail:" >&2
        tail -n 50 "$log" >&2
        exit 1
    fi
done
