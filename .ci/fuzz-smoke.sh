#!/usr/bin/env bash
# Fuzz smoke test: runs every cargo-fuzz target for a short time from the checked-in seed corpus
# (copied to a temporary directory, so the repository is never modified). Exits non-zero if a
# target crashes. Skips (exit 0, with a message) when no nightly toolchain is available.
#
#   .ci/fuzz-smoke.sh            # 30 s per target
#   FUZZ_SECONDS=60 .ci/fuzz-smoke.sh
#   FUZZ_TARGET_DIR=target/asan .ci/fuzz-smoke.sh   # another build directory (relative to fuzz/)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${FUZZ_SECONDS:-30}"
targets=(envelope_open record_decode ops_vs_model)
dir_args=()
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
    dir_args=(--target-dir "$FUZZ_TARGET_DIR")
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz-smoke: no nightly toolchain; skipping" >&2
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/silograph-fuzz-smoke.XXXXXX")"
trap 'rm -rf "$work"' EXIT

cd "$root/fuzz"
cargo +nightly fuzz build -O "${dir_args[@]}"
status=0
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
    if [ -d "corpus/$t" ]; then
        cp -R "corpus/$t/." "$work/corpus/$t/"
    fi
    echo "fuzz-smoke: $t for ${seconds}s" >&2
    if ! cargo +nightly fuzz run -O "${dir_args[@]}" "$t" "$work/corpus/$t" -- \
        -max_total_time="$seconds" -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1 \
        >"$work/$t.log" 2>&1; then
        echo "fuzz-smoke: $t FAILED; last lines of its log:" >&2
        tail -n 40 "$work/$t.log" >&2
        for a in "$work/artifacts/$t"/*; do
            [ -e "$a" ] || continue
            echo "fuzz-smoke: reproducer $(basename "$a") (base64):" >&2
            base64 "$a" >&2
        done
        status=1
    else
        grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|Done)' "$work/$t.log" >&2 || true
    fi
done
exit "$status"
