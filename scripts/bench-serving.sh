#!/usr/bin/env bash
# Serving benchmark: start Redis and a release server on the quickstart model, run the standard
# load-test scenarios (loadtest/scenarios: sweep, baseline, hot-swap, overload, redis-outage),
# check their HTML reports in headless Chromium when it is installed, and refresh the section
# between the `bench-serving` markers of BENCHMARKS.md.
#
#   scripts/bench-serving.sh
#
# The model is $SIDREC_BENCH_MODEL (default runs/quickstart/sft/best, the first of the two
# models scripts/quickstart.sh trains: one model, so that the figures are one model's; its
# served ensemble, runs/quickstart/ensemble, decodes both) with its dataset $SIDREC_BENCH_DATA
# (default runs/quickstart/data). When the model is missing it is built cheaply with the quickstart's steps and a short SFT
# ($SIDREC_BENCH_SFT_STEPS, default 100). Reports go to $SIDREC_BENCH_OUT (default
# runs/bench-serving). Every scenario is short (at most about a minute), so the whole run takes
# about 5 minutes once the binaries and the model exist.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${SIDREC_BENCH_MODEL:-runs/quickstart/sft/best}
DATA=${SIDREC_BENCH_DATA:-runs/quickstart/data}
OUT=${SIDREC_BENCH_OUT:-runs/bench-serving}
PORT=${SIDREC_BENCH_PORT:-18090}
export SIDREC_REDIS_PORT=${SIDREC_REDIS_PORT:-16390}
STEPS=${SIDREC_BENCH_SFT_STEPS:-100}
TOKEN=bench-$$-$RANDOM
# One compute thread for the tiny model (a pool spins on barriers on 2 shared cores).
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}
export SIDREC_THREADS=${SIDREC_THREADS:-1}

echo "==> building (release)"
cargo build --release --locked -p sidrec-server -p sidrec-loadtest -p sidrec-trainer
T=target/release/sidrec-trainer
LT=target/release/sidrec-loadtest

if [ ! -f "$MODEL/sidrec.json" ]; then
  echo "==> no model at $MODEL: building one with the quickstart's steps and $STEPS SFT steps"
  RUN=$(dirname "$(dirname "$MODEL")")
  DATA=$RUN/data
  ./scripts/fetch-encoder.sh
  [ -f "$DATA/sid_index.json" ] || {
    $T data synth --out "$DATA"
    $T embed --data "$DATA" --encoder .cache/encoders/all-MiniLM-L6-v2 --out "$RUN/items.npy" --max-length 128
    $T sid --data "$DATA" --embeddings "$RUN/items.npy" --method rq-kmeans-constrained
  }
  $T init --data "$DATA" --out "$RUN/checkpoints/init"
  $T sft --init "$RUN/checkpoints/init" --data "$DATA" --out "$RUN/sft" \
    --tasks seqrec,title2sid --history-loss --max-steps "$STEPS" --eval-every "$STEPS" \
    --valid-rows 200 --lr 3e-3 --warmup 20
fi

mkdir -p "$OUT"
MODELS=$OUT/models
rm -rf "$MODELS"
mkdir -p "$MODELS"
cp -r "$MODEL" "$MODELS/base"

SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
cleanup() {
  stop_server
  ./scripts/redis-server.sh stop "$SIDREC_REDIS_PORT" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# start_server CACHE_TTL: the server on the model directory, with Redis, a 1 s watcher (hot
# swap through the directory) and an admin token (hot swap through /admin/reload).
start_server() {
  target/release/sidrec-server --model-dir "$MODELS" --port "$PORT" \
    --redis-url "redis://127.0.0.1:$SIDREC_REDIS_PORT" --admin-token "$TOKEN" \
    --watch-interval 1s --cache-ttl "$1" --log-level warn ${SIDREC_BENCH_SERVER_FLAGS:-} \
    >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    if curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  echo "error: the server did not become ready (see $OUT/server.log)" >&2
  exit 1
}

echo "==> Redis on 127.0.0.1:$SIDREC_REDIS_PORT, server on 127.0.0.1:$PORT"
./scripts/redis-server.sh
./scripts/redis-server.sh start "$SIDREC_REDIS_PORT"
start_server 0s
MODEL_JSON=$(curl -sf "http://127.0.0.1:$PORT/v1/model")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

FAILED=()
scenario() {
  local name=$1
  shift
  echo "==> scenario $name"
  if ! "$LT" run --scenario "loadtest/scenarios/$name.toml" --data "$DATA" \
    --url "http://127.0.0.1:$PORT" --out-dir "$OUT" "$@"; then
    FAILED+=("$name")
  fi
}

# The response cache is off for these: the sweep measures the model, not the cache.
scenario sweep
KNEE=$("$LT" knee "$OUT/sweep.json")
echo "knee: $KNEE operations/s"
scenario baseline --knee "$KNEE"
scenario hot-swap --knee "$KNEE" --model-dir "$MODELS" --checkpoint "$MODELS/base" \
  --admin-token "$TOKEN"
scenario overload --knee "$KNEE"
# Redis on the request path (response cache on) for the outage.
stop_server
start_server 60s
scenario redis-outage --knee "$KNEE"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

if command -v chromium >/dev/null 2>&1; then
  echo "==> rendering the HTML reports in headless Chromium"
  for n in sweep baseline hot-swap overload redis-outage; do
    ./scripts/check-report-html.sh "$OUT/$n.html" "$OUT/$n.png" 7 10 || FAILED+=("$n.html")
  done
else
  echo "note: chromium not installed; HTML reports not rendered (apt-get install -y chromium)"
fi

echo "==> refreshing the serving section of BENCHMARKS.md"
SECTION=$OUT/serving-section.md
{
  echo "<!-- bench-serving:begin (written by scripts/bench-serving.sh; edits here are overwritten) -->"
  echo "## Serving under load: scenarios"
  echo
  echo "\`scripts/bench-serving.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average"
  echo "$LOAD_BEFORE before and $LOAD_AFTER after (a shared machine: other developers' builds"
  echo "ran alongside, so absolute numbers move between runs; each scenario is kept under a minute)."
  python3 - "$MODEL_JSON" <<'PY'
import json, sys
m = json.loads(sys.argv[1])
print(f"Model: the quickstart checkpoint `{m.get('version')}` ({m.get('num_parameters')} parameters, "
      f"{m.get('items')} items, score mode {m.get('score_mode')}, max batch {m.get('max_batch_size')}, "
      f"batch wait {m.get('max_batch_wait_ms')} ms, queue {m.get('max_queue')}), release build, "
      f"`RAYON_NUM_THREADS=1`, Redis on loopback. Operations are Poisson arrivals; latencies are from the "
      f"intended send time (coordinated omission corrected) unless marked; histories from the test split.")
PY
  echo
  echo "Reports (JSON, HTML with charts) are in \`$OUT/\`."
  echo
  for n in sweep baseline hot-swap overload redis-outage; do
    if [ -f "$OUT/$n.json" ]; then
      "$LT" markdown "$OUT/$n.json"
      echo
    fi
  done
  if [ ${#FAILED[@]} -gt 0 ]; then
    echo "Did not meet its expectations: ${FAILED[*]}."
    echo
  fi
  echo "<!-- bench-serving:end -->"
} >"$SECTION"
python3 - BENCHMARKS.md "$SECTION" <<'PY'
import re, sys
path, section = sys.argv[1], open(sys.argv[2]).read().rstrip("\n") + "\n"
text = open(path).read()
pat = re.compile(r"<!-- bench-serving:begin.*?<!-- bench-serving:end -->\n?", re.S)
text = pat.sub(lambda _: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section
tmp = path + ".tmp"
open(tmp, "w").write(text)
import os
os.replace(tmp, path)
PY
echo "BENCHMARKS.md updated from $SECTION"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "error: did not meet their expectations: ${FAILED[*]}" >&2
  exit 1
fi
