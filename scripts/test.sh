#!/usr/bin/env bash
# The whole test suite: what `.ci/run` runs and what the README's second command runs.
# Installs what the tests need (the all-MiniLM-L6-v2 text encoder, via scripts/fetch-encoder.sh),
# then runs every test, checks the deployment files (scripts/check-deploy.sh), and ends with how
# many tests could not run for a missing prerequisite, and why. Arguments go to `cargo test`.
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
# The text encoder for the embedding tests (`embed`): fetched once into .cache (gitignored).
# Tests that need it skip when SIDREC_ENCODER_DIR is unset or incomplete, unless
# SIDREC_REQUIRE_SHARED=1.
if [ -z "${SIDREC_ENCODER_DIR:-}" ]; then
  if ./scripts/fetch-encoder.sh; then
    export SIDREC_ENCODER_DIR="$PWD/.cache/encoders/all-MiniLM-L6-v2"
  elif [ "${SIDREC_REQUIRE_SHARED:-0}" = 1 ]; then
    echo "error: could not fetch the text encoder (scripts/fetch-encoder.sh)" >&2
    exit 1
  else
    echo "warning: no text encoder; embedding tests will skip" >&2
  fi
fi

# redis-server for the Redis store tests (server/tests/redis_store.rs), which start their own
# instances on free ports; they skip without it unless SIDREC_REQUIRE_SHARED=1.
if ! ./scripts/redis-server.sh; then
  if [ "${SIDREC_REQUIRE_SHARED:-0}" = 1 ]; then
    echo "error: could not install redis-server (scripts/redis-server.sh)" >&2
    exit 1
  fi
  echo "warning: no redis-server; Redis tests will skip" >&2
fi

# schemathesis (PyPI) for the contract test (server/tests/contract.rs), installed once into a
# virtual environment under .cache; the test skips without it unless SIDREC_REQUIRE_SHARED=1.
if [ -z "${SIDREC_SCHEMATHESIS:-}" ]; then
  if ST=$(./scripts/schemathesis.sh); then
    export SIDREC_SCHEMATHESIS="$ST"
  elif [ "${SIDREC_REQUIRE_SHARED:-0}" = 1 ]; then
    echo "error: could not install schemathesis (scripts/schemathesis.sh)" >&2
    exit 1
  else
    echo "warning: no schemathesis; the contract test will skip" >&2
  fi
fi

# Tests whose prerequisite is missing return early and cargo counts them as passed; each one
# appends "<test>\t<reason>" here (sidrec::testing::skip), and the count is printed below.
SIDREC_SKIP_LOG="$(mktemp "${TMPDIR:-/tmp}/sidrec-skips.XXXXXX")"
export SIDREC_SKIP_LOG
trap 'rm -f "$SIDREC_SKIP_LOG"' EXIT

status=0
cargo test --workspace --locked "$@" || status=$?

# The deployment files (docker/, deploy/k8s/) against the binaries cargo test just built.
echo
./scripts/check-deploy.sh || status=1

./scripts/skip-summary.sh "$SIDREC_SKIP_LOG"
exit "$status"
