"""The environment check (envcheck.py): data about this machine and what it means for a task."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from modx_widgets import envcheck
from modx_widgets.schema.spec import load_schema


def values(**overrides):
    v = load_schema().defaults()
    v.update(overrides)
    return v


def by_name(report, name):
    return [i for i in report.items if i.name == name]


def no_gpu() -> bool:
    return not envcheck.probe_gpus().available


def test_reports_python_and_every_package_with_its_installed_version(tmp_path):
    report = envcheck.check_environment(values(output_dir=str(tmp_path)), "sft", "cpu")
    assert by_name(report, "python")[0].detail.startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    for dist in ("torch", "transformers", "peft", "datasets", "accelerate", "bitsandbytes"):
        (item,) = by_name(report, dist)
        assert item.detail == metadata.version(dist) and item.ok


def test_fp16_on_cpu_is_a_warning_that_says_fp32_and_does_not_block(tmp_path):
    report = envcheck.check_environment(values(output_dir=str(tmp_path), fp16=True), "sft", "cpu")
    warnings = [i.detail for i in report.warnings if i.name == "precision"]
    assert any("fp32" in w for w in warnings)
    assert report.ok


def test_bf16_on_cpu_is_fine(tmp_path):
    report = envcheck.check_environment(values(output_dir=str(tmp_path), fp16=False, bf16=True), "sft", "cpu")
    assert not [i for i in report.warnings if i.name == "precision"] and report.ok


@pytest.mark.skipif(not no_gpu(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda:0", "all"])
def test_a_gpu_device_without_cuda_blocks_the_start(device, tmp_path):
    report = envcheck.check_environment(values(output_dir=str(tmp_path)), "sft", device)
    assert not report.ok
    assert "cpu" in by_name(report, "device")[0].detail


@pytest.mark.skipif(not no_gpu(), reason="needs a machine without CUDA")
def test_auto_without_cuda_warns_and_trains_on_cpu(tmp_path):
    report = envcheck.check_environment(values(output_dir=str(tmp_path)), "sft", "auto")
    (item,) = by_name(report, "device")
    assert item.level == "warning" and "CPU" in item.detail and report.ok


def test_an_unknown_device_is_an_error(tmp_path):
    report = envcheck.check_environment(values(output_dir=str(tmp_path)), "sft", "tpu9")
    assert not report.ok and by_name(report, "device")[0].level == "error"


def test_an_8bit_optimizer_without_bitsandbytes_blocks_the_start(monkeypatch, tmp_path):
    real = envcheck._installed
    monkeypatch.setattr(envcheck, "_installed", lambda d: None if d == "bitsandbytes" else real(d))
    blocked = envcheck.check_environment(values(output_dir=str(tmp_path), optim="adamw_8bit"), "sft", "cpu")
    assert not blocked.ok and by_name(blocked, "bitsandbytes")[0].level == "error"
    fine = envcheck.check_environment(values(output_dir=str(tmp_path), optim="adamw_torch"), "sft", "cpu")
    assert fine.ok and by_name(fine, "bitsandbytes")[0].level == "info"


def test_a_missing_required_package_blocks_the_start(monkeypatch, tmp_path):
    real = envcheck._installed
    monkeypatch.setattr(envcheck, "_installed", lambda d: None if d == "peft" else real(d))
    report = envcheck.check_environment(values(output_dir=str(tmp_path)), "sft", "cpu")
    assert not report.ok and "pip install" in by_name(report, "peft")[0].detail


def test_free_disk_is_measured_where_output_dir_will_be_created(tmp_path):
    import shutil

    report = envcheck.check_environment(values(output_dir=str(tmp_path / "not" / "yet")), "sft", "cpu")
    (item,) = by_name(report, "disk")
    assert str(tmp_path) in item.detail
    free_gib = float(item.detail.split(" GiB")[0])
    assert abs(free_gib - shutil.disk_usage(tmp_path).free / 1024**3) < 1.0


def test_the_check_imports_no_ml_library():
    probe = (
        "import sys\n"
        "from modx_widgets.envcheck import check_environment\n"
        "from modx_widgets.schema.spec import load_schema\n"
        "check_environment({**load_schema().defaults(), 'output_dir': '.'}, 'sft', 'auto')\n"
        "print(' '.join(m for m in ('torch', 'transformers', 'peft', 'datasets', 'bitsandbytes') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_format_report_marks_errors():
    report = envcheck.EnvReport(items=[envcheck.CheckItem("device", False, "error", "nope")], ok=False)
    assert envcheck.format_report(report) == "[FAIL] device: nope"
