#!/usr/bin/env bash
# Runs the official RocketMQ 5 Rust client (crate `rocketmq` 5.0.0 from crates.io) against
# `mqbroker dev`: builds the check crate in tests/rust-client (its own target dir), starts a
# three-node dev group on spare ports in a temporary directory, and runs the check against it.
# Usage: tests/rust-client/run.sh [path-to-mqbroker]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
mqbroker="${1:-$root/target/debug/mqbroker}"
client_port="${RAFTMQ_RS_CLIENT_PORT:-28081}"
raft_port="${RAFTMQ_RS_RAFT_PORT:-29081}"
namesrv_port="${RAFTMQ_RS_NAMESRV_PORT:-29876}"

# A debug build: a clean one takes a few minutes (mostly the client's dependency tree),
# a rebuild after that a few seconds; a release build would only cost more.
echo "building the Rust client check..." >&2
cargo build --quiet --locked --manifest-path "$here/Cargo.toml"
check="$here/target/debug/raftmq-rust-client-check"

source "$root/tests/dev-group.sh"
start_dev_group "$mqbroker" "$client_port" "$raft_port" "$namesrv_port"
client_log="$work/client.log"
# The crate logs to stderr at info level; keep that out of the way unless the check fails.
if ! RAFTMQ_MQADMIN="${RAFTMQ_MQADMIN:-$(dirname "$mqbroker")/mqadmin}" timeout 300 "$check" "$endpoints" 2>"$client_log"; then
    echo "Rust client check failed; client log tail:" >&2
    tail -n 40 "$client_log" >&2
    echo "mqbroker log tail:" >&2
    tail -n 50 "$log" >&2
    exit 1
fi
