#!/usr/bin/env bash
# Rebuilds reports/example/: the smoke profile from an empty cache, then the report in every format.
# Usage (from anywhere, with kdclaims installed): bash reports/regenerate-example.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
export KDCLAIMS_CACHE_DIR="$cache"
python -m pytest claims/ -n 2 --profile smoke -q -p no:cacheprovider
out=reports/example
rm -rf "$out" && mkdir -p "$out"
for format in markdown html json csv; do
  ext=$format; [ "$format" = markdown ] && ext=md
  kdclaims report --format "$format" --output "$out/smoke-report.$ext"
done
cp "$cache/evaluations/latest.json" "$out/smoke-evaluation.json"
bash reports/screenshot.sh "$out/smoke-report.html"  # the 1280 px and 800 px screenshots beside it
