"""A headless run imports only what its task uses: bitsandbytes stays out unless the task needs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_run_support import make_task

from modx_widgets.run.lean import task_needs_bitsandbytes

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# runs modx-train's main() and reports which optional packages the process ended up importing
PROBE = (
    "import sys, json; from modx_widgets import cli; rc = cli.main(sys.argv[1:]); "
    "print(json.dumps({'rc': rc, 'bnb': sys.modules.get('bitsandbytes') is not None}))"
)


def run_probe(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300, env=ENV)
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_plain_lora_task_needs_no_bitsandbytes(tmp_path):
    _, _, values = make_task(tmp_path)
    assert not task_needs_bitsandbytes(values)


@pytest.mark.parametrize("optim", ["adamw_8bit", "paged_adamw_8bit"])
def test_eight_bit_optimizers_need_bitsandbytes(tmp_path, optim):
    _, _, values = make_task(tmp_path)
    assert task_needs_bitsandbytes({**values, "optim": optim})


def test_a_quantized_or_unreadable_model_folder_keeps_bitsandbytes(tmp_path):
    _, _, values = make_task(tmp_path)
    config_path = os.path.join(values["model_path"], "config.json")
    config = json.load(open(config_path))
    json.dump({**config, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}},
              open(config_path, "w"))
    assert task_needs_bitsandbytes(values)
    assert task_needs_bitsandbytes({**values, "model_path": str(tmp_path / "missing")})


def test_headless_lora_run_completes_without_importing_bitsandbytes(tmp_path):
    pytest.importorskip("bitsandbytes")  # installed by the train extra; without it there is nothing to prove
    ws, name, values = make_task(tmp_path, max_steps=2)
    result = run_probe(name, "--workspace", str(ws.root))
    assert result == {"rc": 0, "bnb": False}
    assert os.path.exists(os.path.join(values["output_dir"], "adapter_model.safetensors"))


def test_headless_run_with_an_eight_bit_optimizer_still_gets_bitsandbytes(tmp_path):
    pytest.importorskip("bitsandbytes")
    ws, name, _ = make_task(tmp_path, max_steps=1, optim="adamw_8bit")
    result = run_probe(name, "--workspace", str(ws.root))
    assert result == {"rc": 0, "bnb": True}
