#!/usr/bin/env bash
# Install everything (scripts/setup.sh) and run every test: unit tests, then real-browser tests in
# tests/ui (JupyterLab, Notebook 7 and Voila in headless Chromium).  Fails on any failed test, on an
# unexpected skip (see scripts/pytest_skip_guard.py) and when no test was collected.
# Screenshots, server logs and junit.xml go to test-artifacts/.
#
#   bash scripts/test.sh                    # everything
#   bash scripts/test.sh -m "not ui"        # extra arguments go to pytest
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
bash scripts/setup.sh

ARTIFACTS="$REPO/test-artifacts"
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
export MODX_TEST_ARTIFACTS="$ARTIFACTS"
export PYTHONPATH="$REPO/scripts${PYTHONPATH:+:$PYTHONPATH}"

# Run everything under tests/ and the benchmark helpers' tests unless the arguments name test paths.
TARGETS=(tests bench/llamafactory/tests)
for arg in "$@"; do
    if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then TARGETS=(); fi
done

printf '\n==> running the tests (artifacts in %s)\n' "$ARTIFACTS"
start=$(date +%s)
rc=0
"$REPO/.venv/bin/python" -m pytest ${TARGETS[@]+"${TARGETS[@]}"} \
    -p pytest_skip_guard -p no:cacheprovider \
    -rfEs --durations=15 --timeout=900 \
    --junitxml="$ARTIFACTS/junit.xml" "$@" || rc=$?
elapsed=$(( $(date +%s) - start ))

counts="$("$REPO/.venv/bin/python" - "$ARTIFACTS/junit.xml" <<'PY' 2>/dev/null || true
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
passed = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
print(f"{passed} passed, {total['failures']} failed, {total['errors']} errors, {total['skipped']} skipped")
PY
)"

echo
echo "================================ summary ================================"
case "$rc" in
    0) echo "PASSED: ${counts:-see above} in ${elapsed}s" ;;
    5) echo "FAILED: pytest collected no tests (exit 5); an empty run proves nothing" ; rc=1 ;;
    *) echo "FAILED (pytest exit $rc): ${counts:-see above} in ${elapsed}s" ;;
esac
echo "artifacts: $ARTIFACTS"
exit "$rc"
