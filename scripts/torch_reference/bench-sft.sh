#!/usr/bin/env bash
# SFT step throughput, sidrec beside PyTorch on the same batches from the same weights,
# interleaved so that both see the same machine load: for each thread count, preset and round,
# sidrec's bench (which exports its initial weights and batches), then PyTorch on that export.
# Usage: scripts/torch_reference/bench-sft.sh [presets=tiny,base,small] [rounds=2] [steps=8] [threads=1,2]
# SIDREC_BENCH_COMPOSITE=1 adds a run of sidrec's composite tensor ops (the kernels' "before").
# Needs ../shared/data/industrial (or SIDREC_BENCH_DATA) and scripts/torch_reference/setup.sh.
# Prints one summary line per run and a table of the medians per preset and thread count.
set -euo pipefail
cd "$(dirname "$0")/../.."
PRESETS=${1:-tiny,base,small}
ROUNDS=${2:-2}
STEPS=${3:-8}
THREADS=${4:-1,2}
OUT=${SIDREC_BENCH_OUT:-target/bench-reports/sft-vs-torch}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
./scripts/torch_reference/setup.sh
PY=$PWD/.cache/torch-venv/bin/python
# SIDREC_BENCH_BIN: an already built bench binary (skips the build).
BIN=${SIDREC_BENCH_BIN:-$(cargo bench -p sidrec-trainer --bench sft_throughput --no-run --locked 2>&1 |
  sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)}
[ -x "$BIN" ] || { echo "bench binary not found" >&2; exit 1; }
# The bench finds its data relative to the trainer package, as `cargo bench` runs it.
bench() { (cd trainer && "$BIN" "$@"); }
col() { awk -F'|' -v c="$1" '/^\| [A-Z]/ { gsub(/ /, "", $c); print $c }'; }
RESULTS="$OUT/results.tsv"
printf 'threads\tpreset\tround\tload\tsidrec_tok_s\ttorch_tok_s\tratio\tsidrec_cpu_ms\ttorch_cpu_ms\tcpu_ratio\n' > "$RESULTS"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for threads in ${THREADS//,/ }; do
  export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
  for preset in ${PRESETS//,/ }; do
    for round in $(seq 1 "$ROUNDS"); do
      load=$(cut -d' ' -f1 /proc/loadavg)
      echo "== $preset, $threads thread(s), round $round (load $load)"
      row=$(bench --presets "$preset" --steps "$STEPS" --history-loss --export "$OUT" | grep '^| [A-Z]')
      echo "sidrec fused     $row"
      if [ "${SIDREC_BENCH_COMPOSITE:-0}" = 1 ]; then
        bench --presets "$preset" --steps "$STEPS" --history-loss --kernels composite |
          grep '^| [A-Z]' | sed 's/^/sidrec composite /'
      fi
      json="$OUT/$preset/torch-t$threads-round$round.json"
      "$PY" scripts/torch_reference/train.py "$OUT/$preset" --threads "$threads" --json "$json" |
        grep -v '^Loading'
      # Step tokens/s (wall) and CPU ms per step, both excluding the two warm-up batches.
      ours=$(echo "$row" | col 9)
      ours_cpu=$(echo "$row" | col 11)
      read -r theirs theirs_cpu < <("$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); print(round(j['tokens_per_s']), round(j['cpu_ms_per_step']))" "$json")
      ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')
      cpu_ratio=$(awk -v a="$ours_cpu" -v b="$theirs_cpu" 'BEGIN { printf "%.2f", b / a }')
      echo "   sidrec $ours tok/s ($ours_cpu CPU ms/step), PyTorch $theirs tok/s ($theirs_cpu CPU ms/step): $ratio x wall, $cpu_ratio x per CPU-s"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$threads" "$preset" "$round" "$load" "$ours" "$theirs" "$ratio" "$ours_cpu" "$theirs_cpu" "$cpu_ratio" >> "$RESULTS"
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$RESULTS" <<'PYEOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("\n| preset | threads | rounds | load | sidrec tok/s | PyTorch tok/s | sidrec / PyTorch tok/s (median) | CPU ms/step sidrec / PyTorch | tokens per CPU-s, sidrec / PyTorch (median) |")
print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
keys = sorted({(r["preset"], int(r["threads"])) for r in rows}, key=lambda k: (["tiny", "base", "small"].index(k[0]) if k[0] in ("tiny", "base", "small") else 9, k[1]))
for preset, t in keys:
    rs = [r for r in rows if r["preset"] == preset and int(r["threads"]) == t]
    loads = [float(r["load"]) for r in rs]
    print(f"| {preset} | {t} | {len(rs)} | {min(loads):.1f}-{max(loads):.1f} | "
          + " / ".join(r["sidrec_tok_s"] for r in rs) + " | "
          + " / ".join(r["torch_tok_s"] for r in rs) + " | "
          + f"{statistics.median(float(r['ratio']) for r in rs):.2f}x | "
          + " / ".join(f"{r['sidrec_cpu_ms']} / {r['torch_cpu_ms']}" for r in rs) + " | "
          + f"{statistics.median(float(r['cpu_ratio']) for r in rs):.2f}x |")
PYEOF
