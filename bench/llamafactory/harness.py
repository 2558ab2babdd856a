"""Run one training command under the benchmark probe and read back what it measured.

Why a separate process per run: both tools must pay their own start-up (imports, model load,
data preparation) and their memory must not mix. The parent times the whole command with a
monotonic clock and reads the child's peak RSS from `wait4`; the probe in timing_hook/ records
the step times, real token counts and loss logs from inside the child. Standard library only.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
PROBE_DIR = HERE / "timing_hook"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


class RunFailed(RuntimeError):
    """A benchmarked command exited non-zero or left no probe record; the message names its log."""


@dataclass
class RunResult:
    """What one benchmarked command did, in seconds, tokens and bytes."""

    tool: str
    wall_s: float
    peak_rss_mb: float
    first_step_s: float  # command start -> end of the first optimizer step
    train_s: float  # train begin -> last optimizer step end
    steps: int
    real_tokens: int
    label_tokens: int
    steady_tokens_per_s: float  # tokens of steps 2..N over their time (first step excluded)
    quiet_tokens_per_s: float = float("nan")  # the fastest quarter of steps 2..N (see summarize)
    cpu_tokens_per_s: float = float("nan")  # tokens of steps 2..N per CPU-second of the training process
    losses: list[tuple[int, float]] = field(default_factory=list)
    log_path: str = ""

    @property
    def tokens_per_s(self) -> float:
        """Real tokens of the whole training loop over its time."""
        return self.real_tokens / self.train_s if self.train_s > 0 else float("nan")


def probe_env(probe_file: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a benchmarked child: offline, probe on, nothing inherited that skews it."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(OFFLINE_ENV)
    env["PYTHONPATH"] = str(PROBE_DIR)
    env["BENCH_PROBE_FILE"] = str(probe_file)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def run_probed(tool: str, cmd: Sequence[str], run_dir: Path, *, env_extra: dict[str, str] | None = None,
               timeout_s: float = 3600.0) -> RunResult:
    """Run `cmd` with the probe; output goes to run_dir/<tool>.log. Raises RunFailed on failure."""
    run_dir.mkdir(parents=True, exist_ok=True)
    probe_file = run_dir / f"{tool}.probe.json"
    log_path = run_dir / f"{tool}.log"
    probe_file.unlink(missing_ok=True)
    env = probe_env(probe_file, {"HF_DATASETS_CACHE": str(run_dir / "hf_datasets_cache"), **(env_extra or {})})
    with log_path.open("w") as log:
        t0_wall = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(run_dir))
        deadline = t0 + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise RunFailed(f"{tool}: no result after {timeout_s:.0f} s; see {log_path}")
            time.sleep(0.02)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RunFailed(f"{tool} exited with {proc.returncode}; last lines of {log_path}:\n{_tail(log_path)}")
    if not probe_file.exists():
        raise RunFailed(f"{tool}: the probe recorded nothing (did a Trainer run?); see {log_path}")
    rec = json.loads(probe_file.read_text())
    return summarize(tool, rec, t0_wall, wall, usage.ru_maxrss / 1024.0, str(log_path))


def summarize(tool: str, rec: dict[str, Any], t0_wall: float, wall: float, rss_mb: float, log_path: str) -> RunResult:
    """Turn a probe record into a RunResult (pure; tested on hand-made records)."""
    steps = rec.get("steps") or []
    if not steps:
        raise RunFailed(f"{tool}: no optimizer step was recorded; see {log_path}")
    first_step, t_first, tok_first = steps[0][:3]
    last_step, t_last, tok_last = steps[-1][:3]
    cpu = float("nan")
    if len(steps) > 1 and len(steps[0]) > 4 and steps[-1][4] > steps[0][4]:
        cpu = (tok_last - tok_first) / (steps[-1][4] - steps[0][4])
    steady = (tok_last - tok_first) / (t_last - t_first) if len(steps) > 1 and t_last > t_first else float("nan")
    losses = [(int(r["step"]), float(r["loss"])) for r in rec.get("logs", []) if "loss" in r]
    # On a shared machine a step can wait for the CPU for seconds. Each step's seconds per token,
    # taken at its 25th percentile, estimates the speed when the tool had the CPU to itself.
    per_token = sorted((b[1] - a[1]) / (b[2] - a[2]) for a, b in zip(steps, steps[1:]) if b[2] > a[2])
    quiet = 1.0 / per_token[len(per_token) // 4] if per_token else float("nan")
    return RunResult(
        tool=tool,
        wall_s=wall,
        peak_rss_mb=rss_mb,
        first_step_s=t_first - t0_wall,
        train_s=t_last - rec["train_begin"],
        steps=int(last_step),
        real_tokens=int(rec.get("real_tokens", tok_last)),
        label_tokens=int(rec.get("label_tokens", steps[-1][3])),
        steady_tokens_per_s=steady,
        quiet_tokens_per_s=quiet,
        cpu_tokens_per_s=cpu,
        losses=losses,
        log_path=log_path,
    )


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max) -- the machine's noise travels with every figure."""
    vals = [v for v in values if v == v]  # drop NaN
    if not vals:
        return (float("nan"),) * 3
    return min(vals), statistics.median(vals), max(vals)


def result_line(metric: str, ratios: Sequence[float], target: float | None = None) -> str:
    """One `RESULT` line for bench/run_all.sh (format in bench/README.md): median [min..max] of per-pair ratios."""
    lo, med, hi = spread(ratios)
    line = f"RESULT {metric} ratio={med:.3f} min={lo:.3f} max={hi:.3f}"
    return line + (f" target={target:g}" if target is not None else "")


def fmt_spread(values: Sequence[float], digits: int = 2, unit: str = "") -> str:
    lo, med, hi = spread(values)
    return f"{med:.{digits}f}{unit} [{lo:.{digits}f}..{hi:.{digits}f}]"


def compare_losses(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> dict[str, float]:
    """How far two loss curves are apart at the steps both logged.

    `final_rel_diff` compares the mean of the last quarter of the common steps, where the two
    curves should have converged to the same level.
    """
    da, db = dict(a), dict(b)
    common = sorted(set(da) & set(db))
    if not common:
        return {"steps": 0}
    diffs = [abs(da[s] - db[s]) for s in common]
    tail = common[-max(1, len(common) // 4):]
    fa = statistics.fmean(da[s] for s in tail)
    fb = statistics.fmean(db[s] for s in tail)
    return {
        "steps": len(common),
        "first_abs_diff": diffs[0],
        "mean_abs_diff": statistics.fmean(diffs),
        "max_abs_diff": max(diffs),
        "final_a": fa,
        "final_b": fb,
        "final_rel_diff": abs(fa - fb) / max(abs(fb), 1e-12),
    }
