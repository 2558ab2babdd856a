#!/usr/bin/env bash
# The main job: set up, build the tiny demo model and data in demo/, and open the quickstart notebook
# in JupyterLab (loopback only; the URL with its token is printed).  With --headless (a machine without
# a browser) the same demo task is trained with modx-train instead, printing progress and the final status.
#
#   bash scripts/demo.sh               # JupyterLab on http://127.0.0.1:8888 (MODX_PORT=... to change)
#   bash scripts/demo.sh --headless
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
HEADLESS=0
for arg in "$@"; do
    case "$arg" in
        --headless) HEADLESS=1 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown option '$arg' (use --headless or --help)" >&2; exit 2 ;;
    esac
done

bash scripts/setup.sh
PY="$REPO/.venv/bin/python"
export MODX_DEMO_DIR="$REPO/demo"

if [ "$HEADLESS" = 1 ]; then
    exec "$PY" scripts/demo_headless.py --demo-dir "$MODX_DEMO_DIR"
fi

"$PY" scripts/demo_headless.py --demo-dir "$MODX_DEMO_DIR" --build-only

# First free port from MODX_PORT (default 8888) on, so a second demo does not collide with the first.
PORT="$("$PY" - "${MODX_PORT:-8888}" <<'PY'
import socket, sys
port = int(sys.argv[1])
for candidate in range(port, port + 50):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        print(candidate)
        break
else:
    sys.exit(f"no free port in {port}..{port + 49}")
PY
)"
TOKEN="$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
EXTRA=()
[ "$(id -u)" = 0 ] && EXTRA+=(--allow-root)

URL="http://127.0.0.1:$PORT/lab/tree/examples/quickstart.ipynb?token=$TOKEN"
printf '\n==> JupyterLab is starting; open the quickstart at:\n\n    %s\n\n    (Ctrl-C here stops it)\n\n' "$URL"
exec "$REPO/.venv/bin/jupyter" lab examples/quickstart.ipynb \
    --ip=127.0.0.1 --port="$PORT" --ServerApp.port_retries=0 \
    --IdentityProvider.token="$TOKEN" --ServerApp.root_dir="$REPO" \
    ${EXTRA[@]+"${EXTRA[@]}"}
