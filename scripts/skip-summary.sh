#!/usr/bin/env bash
# Print how many tests skipped (cargo counts them as passed) and why, from the log that
# sidrec::testing::skip appends "<test>\t<reason>" lines to. Usage: skip-summary.sh LOG
set -euo pipefail
log="${1:?usage: skip-summary.sh LOG}"
n=0
[ -s "$log" ] && n=$(wc -l <"$log")
echo
if [ "$n" -eq 0 ]; then
  echo "skipped: 0 (every test ran)"
  exit 0
fi
echo "skipped: $n of the tests reported as passed did not run:"
# One line per reason: the count, the reason, then the tests.
sort "$log" | awk -F'\t' '
  { count[$2]++; tests[$2] = tests[$2] (tests[$2] == "" ? "" : ", ") $1 }
  END { for (r in count) printf "  %d x %s\n      %s\n", count[r], r, tests[r] }'
