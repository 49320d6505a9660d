#!/usr/bin/env bash
# The whole test suite: what `.ci/run` runs and what the README's second command runs.
# Installs what the tests need (nothing beyond a Rust toolchain yet), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install a Rust toolchain (https://rustup.rs)" >&2
  exit 1
fi

# The reference dataset sits beside the repository; tests that need it skip when it is
# absent unless SIDREC_REQUIRE_SHARED=1 (CI sets it).
if [ -d ../shared/data/industrial ]; then
  echo "using reference data in $(cd ../shared && pwd)/data/industrial"
fi

# The test harness already runs tests on every core; candle's own pool on top of that makes its
# threads spin on barriers (measured: 7x slower SFT steps on a loaded 2-core machine).
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-1}"

cargo test --workspace --locked "$@"
