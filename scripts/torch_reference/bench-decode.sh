#!/usr/bin/env bash
# Exact-mode 50-beam decoding, `sidrec-trainer eval` beside HF `generate` (scripts/hf_parity.py,
# the reference's constrained processor) on the same checkpoint and rows, interleaved so that
# both sides see the same machine load: for each batch size and round, sidrec decodes the rows,
# then HF decodes the same prompts (left-padded batches, as the reference's evaluate.py) and
# checks that its top-50 lists equal sidrec's.
# Usage: scripts/torch_reference/bench-decode.sh CHECKPOINT DATA [rows=32] [batches=1,8,32]
#          [rounds=2] [threads=1]
#   CHECKPOINT: a sidrec checkpoint (one with item embeddings is timed only: HF's Qwen2 ignores
#   them); DATA: its dataset directory (the test split's first `rows` rows are decoded).
# SIDREC_BIN (default ${CARGO_TARGET_DIR:-target}/release/sidrec-trainer), SIDREC_BENCH_OUT
# (default target/bench-reports/decode-vs-hf). Needs scripts/torch_reference/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 2 ]; then
  sed -n '7,13p' "$0" >&2
  exit 2
fi
CK=$1
DATA=$2
ROWS=${3:-32}
BATCHES=${4:-1,8,32}
ROUNDS=${5:-2}
THREADS=${6:-1}
BIN=${SIDREC_BIN:-${CARGO_TARGET_DIR:-target}/release/sidrec-trainer}
OUT=${SIDREC_BENCH_OUT:-target/bench-reports/decode-vs-hf}
[ -x "$BIN" ] || { echo "error: $BIN is not an executable (cargo build --release -p sidrec-trainer)" >&2; exit 1; }
[ -f "$CK/sidrec.json" ] || { echo "error: $CK/sidrec.json not found: not a sidrec checkpoint" >&2; exit 1; }
mkdir -p "$OUT"
./scripts/torch_reference/setup.sh
PY=$PWD/.cache/torch-venv/bin/python

printf 'batch\tround\tsidrec_rows_per_s\thf_rows_per_s\tratio\tidentical\tload\n' >"$OUT/results.tsv"
for b in ${BATCHES//,/ }; do
  for r in $(seq 1 "$ROUNDS"); do
    ev="$OUT/eval-b$b-r$r"
    "$BIN" eval --threads "$THREADS" --checkpoint "$CK" --data "$DATA" --split test \
      --num-beams 50 --limit "$ROWS" --batch-size "$b" --mode exact --out "$ev" >/dev/null
    OMP_NUM_THREADS=$THREADS "$PY" scripts/hf_parity.py --checkpoint "$CK" \
      --predictions "$ev/predictions.json" --limit "$ROWS" --threads "$THREADS" \
      --batch-size "$b" --json "$ev/hf.json" >"$ev/hf.log" 2>&1 || {
      tail -5 "$ev/hf.log" >&2
      echo "error: HF's rankings differ from sidrec's (batch $b, round $r): $ev/hf.log" >&2
      exit 1
    }
    "$PY" - "$ev/hf.json" "$b" "$r" "$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/results.tsv" <<'PYEOF'
import json, sys
h = json.load(open(sys.argv[1]))
ours, theirs = h["sidrec_rows_per_second"], h["hf_rows_per_second"]
ident = "timed only" if h["identical"] is None else f'{h["identical"]}/{h["rows"]}'
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{ours:.2f}\t{theirs:.2f}\t{ours / theirs:.1f}\t{ident}\t{sys.argv[4]}")
PYEOF
  done
done
column -t -s $'\t' "$OUT/results.tsv"
