#!/usr/bin/env bash
# Run every benchmark in bench/ and print one table of ratios at the end.
#
#   bash bench/run_all.sh            # full runs (tens of minutes on 2 cores); sets up .venv on a fresh clone
#   bash bench/run_all.sh --quick    # smoke sizes, for scripts that accept --quick
#   ONLY="compare_llamafactory bench_startup" bash bench/run_all.sh   (names in bench/, or paths)
#   RESULTS_DIR=/tmp/r bash bench/run_all.sh                           (default bench/results)
#
# Each benchmark is a Python script bench/bench_*.py or bench/compare_*.py. Its full output goes to
# bench/results/<name>.log. For the summary, a script prints lines of the form
#   RESULT <metric> ratio=<median> min=<min> max=<max> [target=<t>] [unit=<u>]
# (see bench/README.md); for a script that prints none, its last lines mentioning a ratio are shown.
# gpu.sh is not run here: it needs an NVIDIA GPU (bash bench/gpu.sh, or --dry-run anywhere).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
cd "$REPO"

QUICK=()
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=(--quick) ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "usage: bash bench/run_all.sh [--quick]" >&2; exit 64 ;;
  esac
done

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -n "${VIRTUAL_ENV:-}" ]]; then PY="$VIRTUAL_ENV/bin/python"
elif [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"
else PY=python3; fi
if ! "$PY" -c "import modx_widgets, transformers, peft" >/dev/null 2>&1; then
  if [[ -z "${PYTHON:-}" && -z "${VIRTUAL_ENV:-}" ]]; then  # a fresh clone: set it up, then use its venv
    echo "run_all.sh: no environment with modx_widgets yet: running scripts/setup.sh" >&2
    bash "$REPO/scripts/setup.sh" >&2 || { echo "run_all.sh: scripts/setup.sh failed" >&2; exit 2; }
    PY="$REPO/.venv/bin/python"
  fi
  if ! "$PY" -c "import modx_widgets, transformers, peft" >/dev/null 2>&1; then
    echo "run_all.sh: $PY cannot import modx_widgets with its training extras." >&2
    echo "  Install first: bash scripts/setup.sh (or pip install torch==2.13.0 && pip install -e '.[train,test]')" >&2
    exit 2
  fi
fi
export PATH="$(dirname "$PY"):$PATH"   # so the scripts find modx-train next to the interpreter

RESULTS="${RESULTS_DIR:-$HERE/results}"
mkdir -p "$RESULTS"
SUMMARY="$RESULTS/summary.txt"
: > "$SUMMARY.tmp"
: > "$SUMMARY.notes"

scripts=()
if [[ -n "${ONLY:-}" ]]; then
  for name in $ONLY; do
    if [[ "$name" == */* ]]; then scripts+=("$name"); else scripts+=("$HERE/${name%.py}.py"); fi
  done
else
  for f in "$HERE"/bench_*.py "$HERE"/compare_*.py; do [[ -e "$f" ]] && scripts+=("$f"); done
fi

declare -A STATUS
for script in "${scripts[@]}"; do
  name="$(basename "$script" .py)"
  if [[ ! -f "$script" ]]; then echo "run_all.sh: no such benchmark: $script" >&2; STATUS[$name]="missing"; continue; fi
  args=()
  if [[ ${#QUICK[@]} -gt 0 ]] && "$PY" "$script" --help 2>/dev/null | grep -q -- "--quick"; then args=(--quick); fi
  echo "=== $name ${args[*]:-}" >&2
  start=$(date +%s)
  "$PY" "$script" "${args[@]}" 2>&1 | tee "$RESULTS/$name.log"
  rc=${PIPESTATUS[0]}
  STATUS[$name]="exit $rc, $(( $(date +%s) - start )) s"
  if grep -qE '^RESULT ' "$RESULTS/$name.log"; then
    grep -E '^RESULT ' "$RESULTS/$name.log" | sed "s/^RESULT /$name /" >> "$SUMMARY.tmp"
  else  # no RESULT lines: keep the script's own lines that mention a ratio
    grep -iE 'ratio' "$RESULTS/$name.log" | tail -n 5 | sed "s/^[[:space:]]*/$name: /" >> "$SUMMARY.notes" || true
  fi
done

{
  echo
  echo "================ benchmark summary (median [min..max] over repeats) ================"
  printf '%-22s %-44s %8s %20s %8s\n' benchmark metric ratio "[min..max]" target
  while read -r bench metric rest; do
    ratio=$(sed -n 's/.*ratio=\([^ ]*\).*/\1/p' <<<"$rest")
    lo=$(sed -n 's/.*min=\([^ ]*\).*/\1/p' <<<"$rest")
    hi=$(sed -n 's/.*max=\([^ ]*\).*/\1/p' <<<"$rest")
    target=$(sed -n 's/.*target=\([^ ]*\).*/\1/p' <<<"$rest")
    printf '%-22s %-44s %8s %20s %8s\n' "$bench" "$metric" "$ratio" "[$lo..$hi]" "${target:--}"
  done < "$SUMMARY.tmp"
  if [[ -s "$SUMMARY.notes" ]]; then
    echo "ratios printed in their own words by benchmarks without RESULT lines:"
    sed 's/^/  /' "$SUMMARY.notes"
  fi
  for name in "${!STATUS[@]}"; do echo "  $name: ${STATUS[$name]}"; done
  echo "logs: $RESULTS/<benchmark>.log"
} | tee "$SUMMARY"
rm -f "$SUMMARY.tmp" "$SUMMARY.notes"
for name in "${!STATUS[@]}"; do [[ "${STATUS[$name]}" == "exit 0,"* ]] || exit 1; done
exit 0
