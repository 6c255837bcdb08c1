#!/usr/bin/env bash
# scripts/timed.sh LABEL COMMAND...   run COMMAND, append "LABEL SECONDS" to
# .artifacts/timings.txt; scripts/timed.sh --report prints the table (make test
# ends with it) and --reset starts a new one.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=.artifacts/timings.txt
mkdir -p .artifacts
case "${1:-}" in
  --reset) : > "$LOG"; exit 0 ;;
  --report)
    echo "==> time per part of this run (seconds)"
    awk '{ printf "  %-22s %6d  (%d min %02d s)\n", $1, $2, $2 / 60, $2 % 60; total += $2 }
         END { printf "  %-22s %6d  (%d min %02d s)\n", "total", total, total / 60, total % 60 }' "$LOG"
    exit 0 ;;
esac
label=$1; shift
start=$(date +%s)
"$@"
echo "$label $(( $(date +%s) - start ))" >> "$LOG"
