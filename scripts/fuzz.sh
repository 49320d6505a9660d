#!/usr/bin/env bash
# Run every cargo-fuzz target of fuzz/ for a set time and report its executions.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default: 600 s, every target)
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Corpora grow in
# fuzz/corpus/<target>; a crash is saved in fuzz/artifacts/<target>/ and stops the run with a
# non-zero status: turn it into a regression test. Not part of scripts/test.sh (it burns CPU
# for as long as it is told to).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECS="${1:-600}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(request_body pylit_csv index_items_json checkpoint_files)
fi
command -v cargo-fuzz >/dev/null 2>&1 || {
  echo "error: cargo-fuzz not found; cargo install cargo-fuzz" >&2
  exit 1
}
# Coverage instrumentation without a sanitizer: the code under test is safe Rust, and the
# dependencies (candle, tokenizers) would otherwise need an instrumented standard library.
cargo +nightly fuzz build --sanitizer none
printf '%-18s %8s %12s %10s\n' target seconds executions exec/s
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  log="$(mktemp)"
  status=0
  cargo +nightly fuzz run --sanitizer none "$t" "corpus/$t" -- \
    -max_total_time="$SECS" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(( runs / (SECS > 0 ? SECS : 1) ))
  printf '%-18s %8s %12s %10s\n' "$t" "$SECS" "$runs" "$rate"
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "error: $t failed (see fuzz/artifacts/$t)" >&2
    exit "$status"
  fi
  rm -f "$log"
done
