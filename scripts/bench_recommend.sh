#!/usr/bin/env bash
# Closed-loop latency/throughput of POST /v1/recommend (50 beams, top-10) at a fixed concurrency:
# N requests through `xargs -P CONCURRENCY curl`, each timed by curl.
# usage: scripts/bench_recommend.sh CONCURRENCY REQUESTS [URL]
set -euo pipefail
c=${1:?concurrency}; n=${2:?requests}; url=${3:-http://127.0.0.1:8080}
body='{"history": [12, 845, 3071, 77, 1500], "k": 10, "num_beams": 50}'
out=$(mktemp)
start=$(date +%s.%N)
seq 1 "$n" | xargs -P "$c" -I{} curl -s -o /dev/null -w '%{http_code} %{time_total}\n' \
  -H 'content-type: application/json' -d "$body" "$url/v1/recommend" > "$out"
end=$(date +%s.%N)
python3 - "$c" "$n" "$start" "$end" "$out" <<'PY'
import sys
c, n, s, e, path = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rows = [l.split() for l in open(path)]
ok = sorted(float(t) * 1e3 for code, t in rows if code == "200")
if not ok:
    sys.exit(f"no request succeeded: {rows[:3]}")
p = lambda q: ok[min(len(ok) - 1, int(q * len(ok)))]
print(f"concurrency {c}: {len(ok)}/{n} ok, {n / (e - s):.1f} req/s, "
      f"p50 {p(0.5):.1f} ms, p90 {p(0.9):.1f} ms, p99 {p(0.99):.1f} ms")
PY
rm -f "$out"
