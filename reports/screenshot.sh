#!/usr/bin/env bash
# Screenshots of the example HTML report at 1280 px and 800 px wide, with headless Chromium, beside it:
# reports/example/smoke-report-1280.png and -800.png. Look at them to check that nothing overlaps.
# Usage (from anywhere): bash reports/screenshot.sh [report.html]
# Without Chromium (system package `chromium`, e.g. `apt-get install chromium`) it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
html=$(realpath "${1:-reports/example/smoke-report.html}")
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "screenshot.sh: skipped: no Chromium on PATH (install the system package 'chromium')"
  exit 0
fi
out=$(dirname "$html")
stem=$(basename "$html" .html)
for width in 1280 800; do
  # a tall window: the report's top (headline, method, the first architecture's claims with ranking lists)
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
    --window-size="$width,3600" --screenshot="$out/$stem-$width.png" "file://$html" >/dev/null 2>&1
  echo "wrote $out/$stem-$width.png"
done
