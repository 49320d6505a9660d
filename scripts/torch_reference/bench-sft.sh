#!/usr/bin/env bash
# SFT step throughput, sidrec beside PyTorch on the same batches from the same weights,
# interleaved so that both see the same machine load:
#   for each preset and round: sidrec fused kernels, sidrec composite ops, PyTorch.
# Usage: scripts/torch_reference/bench-sft.sh [presets=tiny,base,small] [rounds=2] [steps=8] [threads=2]
# Needs ../shared/data/industrial (or SIDREC_BENCH_DATA) and scripts/torch_reference/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
PRESETS=${1:-tiny,base,small}
ROUNDS=${2:-2}
STEPS=${3:-8}
THREADS=${4:-2}
OUT=${SIDREC_BENCH_OUT:-target/bench-reports/sft-vs-torch}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
./scripts/torch_reference/setup.sh
PY=.cache/torch-venv/bin/python
cargo bench -p sidrec-trainer -p sidrec-server --bench sft_throughput --no-run --locked 2>/dev/null
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
bench() { cargo bench -q -p sidrec-trainer -p sidrec-server --bench sft_throughput --locked -- "$@" 2>/dev/null; }
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for preset in ${PRESETS//,/ }; do
  for round in $(seq 1 "$ROUNDS"); do
    echo "== $preset, round $round (load $(cut -d' ' -f1 /proc/loadavg))"
    bench --presets "$preset" --steps "$STEPS" --history-loss --export "$OUT" | grep "^| [A-Z]" | sed 's/^/sidrec fused     /'
    bench --presets "$preset" --steps "$STEPS" --history-loss --kernels composite | grep "^| [A-Z]" | sed 's/^/sidrec composite /'
    "$PY" scripts/torch_reference/train.py "$OUT/$preset" --threads "$THREADS" --json "$OUT/$preset/torch-round$round.json"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
