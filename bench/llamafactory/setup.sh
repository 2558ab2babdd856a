#!/usr/bin/env bash
# Build the isolated LLaMA-Factory environment used by bench/compare_llamafactory.py.
#
# Why a separate venv: LLaMA-Factory pins older transformers/peft/datasets than modx_widgets, so the
# two cannot share one environment. Why the extra steps: PyPI's torchvision/torchaudio wheels are
# built against other torch releases and either pull a second (multi-GB CUDA) torch or fail to import
# next to torch 2.13.0 CPU. LLaMA-Factory does not use them for text SFT, but it imports torchaudio
# unconditionally, so we install everything except those two and drop in a tiny stub module.
#
# Idempotent: re-running only repairs what is missing. Usage: bash bench/llamafactory/setup.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH="$(dirname "$HERE")"
VENV="${LF_VENV:-$BENCH/_work/lf-venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"      # pinned: an unpinned torch pulls a multi-GB CUDA build
LF_SPEC="${LF_SPEC:-llamafactory==0.9.5}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[lf-setup] creating venv at $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
VPY="$VENV/bin/python"
# pip install, without the per-package notes about optional local index folders that do not exist.
pip_install() { "$VPY" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# 1. torch, pinned. A constraints file keeps every later install from replacing it.
CONSTRAINTS="$VENV/torch-constraints.txt"
echo "$TORCH_SPEC" > "$CONSTRAINTS"
if ! "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '${TORCH_SPEC#torch==}' else 1)" 2>/dev/null; then
  echo "[lf-setup] installing $TORCH_SPEC"
  pip_install "$TORCH_SPEC"
fi

# 2. llamafactory itself without dependencies, then its dependencies minus torch/torchvision/torchaudio.
if ! "$VPY" -c "import importlib.metadata as m; m.version('llamafactory')" 2>/dev/null; then
  echo "[lf-setup] installing $LF_SPEC (no deps)"
  pip_install --no-deps "$LF_SPEC"
fi
REQS="$VENV/lf-requirements.txt"
"$VPY" - "$REQS" <<'PYEOF'
import importlib.metadata as m, re, sys
skip = {"torch", "torchvision", "torchaudio"}
out = []
for req in m.requires("llamafactory") or []:
    if "extra ==" in req:               # optional extras (deepspeed, vllm, ...) are not needed
        continue
    name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower()
    if name not in skip:
        out.append(req)
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PYEOF
echo "[lf-setup] installing LLaMA-Factory's dependencies (without torchvision/torchaudio)"
pip_install -c "$CONSTRAINTS" -r "$REQS"

# 3. torchvision from PyPI does not import next to torch 2.13.0 CPU; make sure none is present.
if "$VPY" -m pip show -q torchvision >/dev/null 2>&1; then
  echo "[lf-setup] removing torchvision"
  "$VPY" -m pip uninstall -y -q torchvision
fi

# 4. stub torchaudio: LLaMA-Factory imports it at module level (audio plugins) even for text-only SFT.
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if ! "$VPY" -m pip show -q torchaudio >/dev/null 2>&1; then
  mkdir -p "$SITE/torchaudio"
  cat > "$SITE/torchaudio/__init__.py" <<'PYEOF'
"""Stub written by modx_widgets bench/llamafactory/setup.sh.

LLaMA-Factory imports torchaudio unconditionally, but text SFT never calls it, and PyPI's
torchaudio wheels require a different torch than the pinned 2.13.0 CPU build.
"""
__version__ = "0.0.0+stub"


def __getattr__(name):
    raise ImportError(f"torchaudio.{name}: torchaudio is a stub in this benchmark venv (no audio support)")
PYEOF
fi

# 5. smoke check: the CLI imports and torch is still the pinned one.
"$VPY" -c "import torch; assert torch.__version__.startswith('${TORCH_SPEC#torch==}'), torch.__version__"
HF_HUB_OFFLINE=1 "$VENV/bin/llamafactory-cli" version >/dev/null
echo "[lf-setup] ok: $("$VPY" -c 'import importlib.metadata as m; print("llamafactory", m.version("llamafactory"), "transformers", m.version("transformers"), "peft", m.version("peft"), "torch", m.version("torch"))')"
