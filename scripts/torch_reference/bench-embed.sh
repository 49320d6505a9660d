#!/usr/bin/env bash
# Embedding throughput, `sidrec-trainer embed` beside PyTorch (scripts/torch_reference/embed.py)
# on the same item texts, truncation, batches and pooling, interleaved so that every side sees
# the same machine load: for each thread count and round, each sidrec binary, then PyTorch
# (which also checks its vectors against the first binary's by cosine similarity).
# Usage: scripts/torch_reference/bench-embed.sh [items=1000] [rounds=2] [threads=1,2] [max_length=128]
#   items: the first N items by id (0: all), written to a temporary dataset directory.
# SIDREC_EMBED_BINS: comma list of name=path sidrec-trainer binaries to compare (default
#   sidrec=$CARGO_TARGET_DIR or target, release/sidrec-trainer), e.g.
#   plain=target/release/sidrec-trainer,mkl=target/mkl/release/sidrec-trainer
# SIDREC_BENCH_DATA (default ../shared/data/industrial), SIDREC_ENCODER_DIR (default
# .cache/encoders/all-MiniLM-L6-v2, scripts/fetch-encoder.sh), SIDREC_BENCH_OUT (default
# target/bench-reports/embed-vs-torch). Needs scripts/torch_reference/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
ITEMS=${1:-1000}
ROUNDS=${2:-2}
THREADS=${3:-1,2}
MAXLEN=${4:-128}
DATA=${SIDREC_BENCH_DATA:-../shared/data/industrial}
ENCODER=${SIDREC_ENCODER_DIR:-.cache/encoders/all-MiniLM-L6-v2}
BINS=${SIDREC_EMBED_BINS:-sidrec=${CARGO_TARGET_DIR:-target}/release/sidrec-trainer}
OUT=${SIDREC_BENCH_OUT:-target/bench-reports/embed-vs-torch}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
./scripts/torch_reference/setup.sh
PY=$PWD/.cache/torch-venv/bin/python
for spec in ${BINS//,/ }; do
  [ -x "${spec#*=}" ] || { echo "error: ${spec#*=} (from SIDREC_EMBED_BINS) is not an executable" >&2; exit 1; }
done
[ -d "$ENCODER" ] || { echo "error: no encoder at $ENCODER (scripts/fetch-encoder.sh)" >&2; exit 1; }

# The subset: the first $ITEMS items by id, in a dataset directory of its own.
SUB=$(mktemp -d)
trap 'rm -rf "$SUB"' EXIT
"$PY" - "$DATA" "$SUB" "$ITEMS" <<'PYEOF'
import json, sys
from pathlib import Path
data, sub, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
files = [data / "items.json"] if (data / "items.json").is_file() else sorted(data.glob("*.item.json"))
if len(files) != 1:
    sys.exit(f"{data}: expected one items.json or *.item.json")
raw = json.loads(files[0].read_text())
ids = sorted(raw, key=int)[: n or None]
(sub / files[0].name).write_text(json.dumps({k: raw[k] for k in ids}))
print(f"{len(ids)} items of {files[0]}")
PYEOF

RESULTS="$OUT/results.tsv"
printf 'threads\tround\tside\tload\titems_per_s\ttokens_per_s\tcpu_s\n' > "$RESULTS"
# items/s, tokens/s and CPU seconds (empty from a build that does not print them).
rate() { sed -n 's/.*(\([0-9.]*\) items\/s, \([0-9.]*\) tokens\/s\(; CPU \([0-9.]*\) s\)\{0,1\}).*/\1\t\2\t\4/p' | tail -1; }
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for threads in ${THREADS//,/ }; do
  export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
  for round in $(seq 1 "$ROUNDS"); do
    first=""
    for spec in ${BINS//,/ }; do
      name=${spec%%=*} bin=${spec#*=}
      load=$(cut -d' ' -f1 /proc/loadavg)
      npy="$OUT/$name-t$threads.npy"
      line=$("$bin" --threads "$threads" embed --data "$SUB" --encoder "$ENCODER" \
        --out "$npy" --max-length "$MAXLEN" 2>>"$OUT/stderr.log" | tail -1)
      echo "t$threads r$round $name (load $load): $line"
      printf '%s\t%s\t%s\t%s\t%s\n' "$threads" "$round" "$name" "$load" "$(echo "$line" | rate)" >> "$RESULTS"
      first=${first:-$npy}
    done
    load=$(cut -d' ' -f1 /proc/loadavg)
    json="$OUT/torch-t$threads-r$round.json"
    "$PY" scripts/torch_reference/embed.py --data "$SUB" --encoder "$ENCODER" \
      --max-length "$MAXLEN" --threads "$threads" --check "$first" --json "$json" 2>>"$OUT/stderr.log" |
      sed "s/^/t$threads r$round torch (load $load): /"
    read -r ips tps cpu < <("$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); print(j['items_per_s'], j['tokens_per_s'], j['cpu_seconds'])" "$json")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$threads" "$round" torch "$load" "$ips" "$tps" "$cpu" >> "$RESULTS"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$RESULTS" <<'PYEOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
sides = list(dict.fromkeys(r["side"] for r in rows))
print("\n| threads | side | rounds | load | items/s | tokens/s (median) | / PyTorch items/s, same round (median) | CPU s | / PyTorch items per CPU-second, same round (median) |")
print("|---:|---|---:|---|---|---:|---:|---|---:|")
for t in sorted({int(r["threads"]) for r in rows}):
    torch = {r["round"]: float(r["items_per_s"]) for r in rows if int(r["threads"]) == t and r["side"] == "torch"}
    torch_cpu = {r["round"]: float(r["cpu_s"]) for r in rows if int(r["threads"]) == t and r["side"] == "torch"}
    for s in sides:
        rs = [r for r in rows if int(r["threads"]) == t and r["side"] == s]
        loads = [float(r["load"]) for r in rs]
        ratio = statistics.median(float(r["items_per_s"]) / torch[r["round"]] for r in rs)
        cpus = [float(r["cpu_s"]) if r["cpu_s"] else None for r in rs]
        known = [(r, c) for r, c in zip(rs, cpus) if c]
        cpu_ratio = (f"{statistics.median(torch_cpu[r['round']] / c for r, c in known):.2f}x"
                     if known else "—")
        print(f"| {t} | {s} | {len(rs)} | {min(loads):.1f}-{max(loads):.1f} | "
              + " / ".join(f"{float(r['items_per_s']):.1f}" for r in rs) + " | "
              + f"{statistics.median(float(r['tokens_per_s']) for r in rs):.0f} | {ratio:.2f}x | "
              + " / ".join(f"{c:.1f}" if c else "—" for c in cpus) + f" | {cpu_ratio} |")
PYEOF
