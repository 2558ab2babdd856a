#!/usr/bin/env bash
# Set up a working checkout: .venv with torch==2.13.0 and modx_widgets (editable, all extras),
# plus Debian's chromium for the browser tests.  Safe to run again: finished steps are skipped.
#
#   bash scripts/setup.sh            # PYTHON=python3.11 bash scripts/setup.sh to pick the interpreter
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
PYTHON="${PYTHON:-python3}"
VENV="$REPO/.venv"
STAMP="$VENV/.modx-setup-stamp"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

say() { printf '\n==> %s\n' "$*"; }
die() { printf '\nsetup.sh: %s\n' "$*" >&2; exit 1; }

# 1. Virtual environment ------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found; install Python 3.11 or set PYTHON=/path/to/python3.11"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$("$PYTHON" --version 2>&1) is too old: modx_widgets needs Python >= 3.11"
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi
PY="$VENV/bin/python"

# 2. Python packages (skipped when nothing that decides them changed since the last success) -----
want="$(cat pyproject.toml scripts/constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$PY" -c 'import modx_widgets, torch' 2>/dev/null; then
    say "Python packages already installed (delete $STAMP to force a reinstall)"
else
    if ! "$PY" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
        say "installing torch==2.13.0"
        "$PY" -m pip install "torch==2.13.0"
    fi
    say "installing modx_widgets (editable) with extras train, test, ui-test"
    "$PY" -m pip install -c scripts/constraints.txt -e ".[train,test,ui-test]"
    "$PY" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' \
        || die "torch is not 2.13.0 after the install: $("$PY" -c 'import torch; print(torch.__version__)')"
    echo "$want" > "$STAMP"
fi

# 3. Chromium for the browser tests (Debian package; Playwright's own download is never used) ----
if command -v chromium >/dev/null 2>&1; then
    say "chromium present: $(command -v chromium)"
else
    say "installing Debian's chromium"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "chromium is missing and this is not root: run 'apt-get install -y chromium' as root"
        SUDO="sudo"
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
    command -v chromium >/dev/null || die "apt-get installed chromium but it is not on PATH"
fi

say "set-up done: activate with '. .venv/bin/activate'"
