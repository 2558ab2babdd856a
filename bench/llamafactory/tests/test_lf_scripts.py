"""bench/gpu.sh refuses clearly without a GPU and its Python runs end to end on CPU (--dry-run)."""

import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2]


def _env(**extra):
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"  # no nvidia-smi on this PATH
    env["PYTHON"] = sys.executable
    env.update(extra)
    return env


def test_gpu_script_fails_fast_with_a_clear_message_without_a_gpu():
    proc = subprocess.run(["bash", str(BENCH / "gpu.sh")], capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == 2
    assert "no NVIDIA GPU" in proc.stderr and "--dry-run" in proc.stderr


def test_gpu_script_dry_run_trains_every_cpu_variant_and_prints_the_table():
    proc = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--dry-run"], capture_output=True, text=True,
                          env=_env(STEPS="3"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    iso = float(re.search(r"packed vs separate = ([0-9.e+-]+)", out).group(1))
    assert iso < 1e-4
    rows = {m.group(1): m for m in re.finditer(r"^(sdpa, (?:padded, length-grouped|padded|packed))\s+(\d+)\s+([0-9.]+)x",
                                                 out, re.M)}
    assert set(rows) == {"sdpa, padded", "sdpa, padded, length-grouped", "sdpa, packed"}
    assert all(int(m.group(2)) > 0 for m in rows.values())
    assert "MFU convention" in out


def test_gpu_script_rejects_unknown_arguments():
    proc = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--fast"], capture_output=True, text=True, env=_env())
    assert proc.returncode == 64 and "usage" in proc.stderr


def test_run_all_rejects_unknown_arguments_and_names_its_usage():
    proc = subprocess.run(["bash", str(BENCH / "run_all.sh"), "--bogus"], capture_output=True, text=True, env=_env())
    assert proc.returncode == 64 and "usage" in proc.stderr


def test_run_all_collects_result_lines_into_one_table_and_fails_if_a_benchmark_fails(tmp_path):
    good = tmp_path / "bench_good.py"
    good.write_text("print('working')\nprint('RESULT speed_vs_baseline ratio=1.250 min=1.100 max=1.400 target=1.05')\n")
    bad = tmp_path / "bench_bad.py"
    bad.write_text("print('ratio with/without: 0.97x')\nraise SystemExit(4)\n")
    results = tmp_path / "results"
    proc = subprocess.run(["bash", str(BENCH / "run_all.sh")], capture_output=True, text=True,
                          env=_env(ONLY=f"{good} {bad}", RESULTS_DIR=str(results)), timeout=120)
    assert proc.returncode == 1  # one benchmark failed
    row = next(line for line in proc.stdout.splitlines() if line.startswith("bench_good"))
    assert row.split() == ["bench_good", "speed_vs_baseline", "1.250", "[1.100..1.400]", "1.05"]
    assert "bench_bad: exit 4" in proc.stdout
    assert "bench_bad: ratio with/without: 0.97x" in proc.stdout  # no RESULT line: its own ratio line
    assert (results / "bench_good.log").read_text().startswith("working")
    assert "speed_vs_baseline" in (results / "summary.txt").read_text()


def test_batching_benchmark_compares_the_three_batchings_on_the_same_examples():
    proc = subprocess.run([sys.executable, str(BENCH / "bench_batching.py"), "--quick"], capture_output=True,
                          text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^(random|grouped|padding_free)\s+[0-9.]+ \[.*?\]\s+\d+ \[.*?\]\s+([0-9.]+)\s+([0-9.]+)$", proc.stdout, re.M)}
    assert set(rows) == {"random", "grouped", "padding_free"}
    computed = {mode: float(row[0]) for mode, row in rows.items()}
    assert computed["padding_free"] == 1.0 and computed["grouped"] < computed["random"]
    # random and padding-free train the same batches in the same order: flattening keeps examples apart
    assert abs(float(rows["random"][1]) - float(rows["padding_free"][1])) < 2e-3
    assert re.search(r"^RESULT grouped_over_random_tokens_per_s ratio=", proc.stdout, re.M)
    assert re.search(r"^RESULT padding_free_over_random_tokens_per_s ratio=", proc.stdout, re.M)
