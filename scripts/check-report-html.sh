#!/usr/bin/env bash
# Render a sidrec-loadtest HTML report in headless Chromium and check that it holds its charts:
# the DOM after rendering must contain at least MIN_SVG <svg> charts and MIN_PATH drawn lines.
# Optionally writes a screenshot.
#
#   scripts/check-report-html.sh REPORT.html [SCREENSHOT.png] [MIN_SVG] [MIN_PATH]
#
# Needs Debian's chromium (apt-get install -y chromium).
set -euo pipefail

html=${1:?usage: check-report-html.sh REPORT.html [SCREENSHOT.png] [MIN_SVG] [MIN_PATH]}
shot=${2:-}
min_svg=${3:-5}
min_path=${4:-5}
[ -f "$html" ] || { echo "error: $html: no such file" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "error: chromium not found (apt-get install -y chromium)" >&2; exit 2; }
url="file://$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
# Root has no user namespace sandbox here; the page is our own file and runs no script.
flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars
       --user-data-dir="$(mktemp -d)")
dom=$(timeout 60 "$browser" "${flags[@]}" --dump-dom "$url" 2>/dev/null)
svg=$(grep -o '<svg' <<<"$dom" | wc -l)
path=$(grep -o '<path' <<<"$dom" | wc -l)
echo "$html: rendered DOM holds $svg <svg> charts and $path <path> lines"
if [ -n "$shot" ]; then
  timeout 60 "$browser" "${flags[@]}" --window-size=1200,4200 --screenshot="$shot" "$url" >/dev/null 2>&1
  [ -s "$shot" ] || { echo "error: no screenshot written to $shot" >&2; exit 1; }
  echo "screenshot: $shot"
fi
if [ "$svg" -lt "$min_svg" ] || [ "$path" -lt "$min_path" ]; then
  echo "error: expected at least $min_svg charts and $min_path lines" >&2
  exit 1
fi
