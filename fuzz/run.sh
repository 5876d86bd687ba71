#!/usr/bin/env bash
# Builds every fuzz target in fuzz/fuzz_targets and runs each for SECONDS_PER_TARGET seconds
# (default 15) from its corpus in fuzz/corpus/<target>. Exits non-zero when a target crashes
# (a panic, a failed assertion, a timeout or running out of memory), naming the target and
# the file its crashing input was saved to.
# Usage: fuzz/run.sh [SECONDS_PER_TARGET]
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz's build use nightly
# flags. Installs cargo-fuzz (crates.io) when it is missing. Builds without a sanitizer (the
# code under test has no unsafe code), with debug assertions and overflow checks.
# fuzz/target is deleted afterwards to spare the disk, unless FUZZ_KEEP_TARGET=1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
seconds="${1:-15}"
# (0 would mean no limit to libFuzzer.)
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$((10#$seconds))" -eq 0 ]; then
    echo "usage: fuzz/run.sh [SECONDS_PER_TARGET], a whole number of seconds above 0" >&2
    exit 2
fi
cd "$here/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found: installing it from crates.io" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# The same flags for the build and every run, so that a run does not build again: the dev
# profile of fuzz/Cargo.toml (optimized where the fuzzed code is; quicker to build than
# cargo-fuzz's release build).
flags=(--dev --sanitizer none --debug-assertions)

cleanup() {
    if [ "${FUZZ_KEEP_TARGET:-0}" != 1 ]; then
        rm -rf "$here/target"
    fi
}
trap cleanup EXIT

# cargo-fuzz has no --locked: fail here if fuzz/Cargo.lock is not up to date.
if ! cargo fetch --locked --quiet --manifest-path "$here/Cargo.toml"; then
    echo "fuzz/Cargo.lock does not match the manifests (a dependency of a workspace crate" >&2
    echo "changed?): update it with 'cargo fetch --manifest-path fuzz/Cargo.toml' and commit it" >&2
    exit 1
fi
cargo fuzz build "${flags[@]}"

failed=()
for target in $(cargo fuzz list); do
    mkdir -p "$here/corpus/$target" "$here/artifacts/$target"
    # Beside the target's artifact folder, not in it: cargo-fuzz reports the newest file
    # there as the crashing input.
    log="$here/artifacts/$target.log"
    # -timeout: an input taking over 10 s counts as a crash (a hang).
    if cargo fuzz run "${flags[@]}" "$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        units=$(find "$here/corpus/$target" -type f | wc -l)
        echo "fuzz target $target: ${runs:-?} inputs in ${seconds} s, no crash (corpus: $units inputs)"
    else
        failed+=("$target")
        echo "fuzz target $target CRASHED; the end of its log ($log):" >&2
        tail -n 40 "$log" >&2
        input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        echo "fuzz target $target: the crashing input was saved to ${input:-(none saved; see the log)}" >&2
        echo "reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $target ${input:-}" >&2
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets that crashed: ${failed[*]}" >&2
    exit 1
fi
echo "all fuzz targets ran ${seconds} s each without a crash"
