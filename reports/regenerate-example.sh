#!/usr/bin/env bash
# Rebuilds reports/example/: each profile's claims (smoke, then digits) from an empty cache, then each one's
# report in every format, its evaluation, and screenshots of its HTML. Prints each run's wall time (the
# digits figure in the README and benchmarks/RESULTS.md comes from here).
# Usage (from anywhere, with kdclaims installed):
#   bash reports/regenerate-example.sh [PROFILE...]      # default: smoke digits; from an empty cache
#   KDCLAIMS_EXAMPLE_CACHE=DIR bash reports/regenerate-example.sh   # keep (or reuse) the members in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
profiles=("$@"); [ ${#profiles[@]} -eq 0 ] && profiles=(smoke digits)
if [ -n "${KDCLAIMS_EXAMPLE_CACHE:-}" ]; then
  cache=$KDCLAIMS_EXAMPLE_CACHE; mkdir -p "$cache"
else
  cache=$(mktemp -d); trap 'rm -rf "$cache"' EXIT
fi
export KDCLAIMS_CACHE_DIR="$cache"
out=reports/example
mkdir -p "$out"
for profile in "${profiles[@]}"; do
  rm -f "$out/$profile"-*
  start=$(date +%s)
  # smoke is a machinery check whose verdicts never fail the run; digits is a reproduction, so a claim that
  # does not reproduce fails its test: the report is written either way.
  python -m pytest claims/ -n 2 --profile "$profile" -q -p no:cacheprovider || echo "($profile: some claims failed)"
  echo "$profile: pytest claims/ -n 2 --profile $profile took $(( $(date +%s) - start )) s wall on $(nproc) cores"
  for format in markdown html json csv; do
    ext=$format; [ "$format" = markdown ] && ext=md
    kdclaims report --format "$format" --output "$out/$profile-report.$ext"
  done
  cp "$cache/evaluations/latest.json" "$out/$profile-evaluation.json"
  bash reports/screenshot.sh "$out/$profile-report.html"  # the 1280 px and 800 px screenshots beside it
done
