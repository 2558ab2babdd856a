"""Kernel-side cost of the live monitor during a run with logging_steps=1.

Trains the tiny local model (modx_widgets.testing) several times in one process,
alternating runs without and with a RunMonitor attached (ABBA order, so warm-up and
machine drift hit both sides alike), and prints side by side:

  * training steps/s, measured between the first and last Progress event (model loading
    and data preparation are excluded, they are the same with or without the monitor);
  * comm messages and bytes sent per second, counted by a stand-in comm that JSON-encodes
    each message as the kernel would (the zmq send itself is not included);
  * steps per CPU-second of the whole process, which other load on a shared machine
    disturbs far less than wall-clock steps/s;
  * flushes per second, CPU time of one flush (render + encode), and the monitor's share
    of the process CPU time (its listener on the training thread plus tail-timer flushes);
  * the ratios with / without the monitor, per pair of neighbouring runs (run i without the
    monitor with run i with it), as median [min..max], and as RESULT lines for bench/run_all.sh.

    python bench/bench_monitor.py [--steps 120] [--repeats 2] [--interval 0.2] [--threads 1]
    python bench/bench_monitor.py --quick     # 200 steps, 1 ABBA block, 1 thread (~20 s)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR / "llamafactory"))

from harness import result_line  # noqa: E402  (shared RESULT format)


class CountingComm:
    """Counts what widgets would send to the browser; encodes it as the kernel would."""

    kernel = "bench"
    messages = 0
    bytes = 0

    def __init__(self, **kwargs: Any) -> None:
        self.comm_id = uuid.uuid4().hex

    def send(self, data: Any = None, buffers: Any = None, **kwargs: Any) -> None:
        CountingComm.messages += 1
        CountingComm.bytes += len(json.dumps(data, default=str)) + sum(len(bytes(b)) for b in buffers or ())

    def on_msg(self, callback: Any) -> None:
        pass

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


def _values(root: Path, steps: int) -> dict[str, Any]:
    from modx_widgets.schema.spec import load_schema
    from modx_widgets.testing import make_sft_data, make_tiny_model

    values = load_schema().defaults()
    values.update(
        model_path=str(make_tiny_model(root / "model")),
        train_file=str(make_sft_data(root / "train.jsonl", n=256)),
        output_dir=str(root / "out"),
        logging_steps=1,
        max_steps=steps,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        max_seq_length=128,
        save_strategy="no",
        eval_strategy="no",
        fp16=False,
        bf16=False,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        log_level="info",
    )
    return values


def _one_run(ws: Any, values: dict[str, Any], name: str, with_monitor: bool, interval: float) -> dict[str, float]:
    from modx_widgets.events import Progress
    from modx_widgets.run import TrainingRun
    from modx_widgets.ui.monitor import RunMonitor

    ws.create_task(name, "sft", "SFT", "cpu", values)
    run = TrainingRun(ws, name)
    ticks: list[tuple[float, float, int]] = []

    def timing(event: Any) -> None:  # attached in both modes, so its cost cancels out
        if isinstance(event, Progress):
            ticks.append((time.perf_counter(), time.process_time(), event.step))

    run.add_listener(timing)
    monitor = None
    cost = {"cpu": 0.0, "flushes": 0.0, "flush_cpu": 0.0}
    inside = threading.local()
    if with_monitor:
        monitor = RunMonitor(flush_interval=interval)
        sink = monitor._sink

        def timed_sink(generation: int, batch: list) -> None:
            t = time.thread_time()
            sink(generation, batch)
            dt = time.thread_time() - t
            cost["flushes"] += 1
            cost["flush_cpu"] += dt
            if not getattr(inside, "listener", False):  # tail-timer flush: not counted below
                cost["cpu"] += dt

        monitor._sink = timed_sink  # type: ignore[method-assign]
        monitor.attach(run)
        listener = monitor._listener
        run.remove_listener(listener)

        def timed_listener(event: Any) -> None:  # everything the monitor costs the training thread
            t = time.thread_time()
            inside.listener = True
            try:
                listener(event)
            finally:
                inside.listener = False
                cost["cpu"] += time.thread_time() - t

        run.add_listener(timed_listener)
    msgs0, bytes0 = CountingComm.messages, CountingComm.bytes
    run.start()
    state = run.wait()
    if monitor is not None:
        monitor.detach()
    if state != "Completed" or len(ticks) < 3:
        raise SystemExit(f"benchmark run {name} ended {state} with {len(ticks)} progress events")
    (w0, c0, s0), (w1, c1, s1) = ticks[1], ticks[-1]  # skip the on_train_begin tick
    span, cpu = w1 - w0, c1 - c0
    return {
        "steps_per_s": (s1 - s0) / span,
        "steps_per_cpu_s": (s1 - s0) / cpu,
        "msgs_per_s": (CountingComm.messages - msgs0) / span,
        "kb_per_s": (CountingComm.bytes - bytes0) / span / 1024,
        "flushes_per_s": cost["flushes"] / span,
        "flush_ms": 1000 * cost["flush_cpu"] / cost["flushes"] if cost["flushes"] else 0.0,
        "monitor_cpu_pct": 100 * cost["cpu"] / cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps per run (logging_steps=1)")
    parser.add_argument("--repeats", type=int, default=2, help="ABBA pairs of runs")
    parser.add_argument("--interval", type=float, default=0.2, help="monitor flush interval in seconds")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="smoke sizes: 200 steps, 1 ABBA block, 1 thread")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 200, 1
        args.threads = args.threads or 1  # 2 spinning threads on a busy 2-core machine: 30x swings
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    import comm

    comm.create_comm = lambda **kwargs: CountingComm(**kwargs)

    from modx_widgets.store import Workspace

    workdir = Path(__file__).resolve().parent / "_work"
    workdir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="monitor_") as tmp:
        root = Path(tmp)
        values = _values(root, args.steps)
        ws = Workspace(root / "ws")
        # one unmeasured run first, so imports and first-time allocations hit neither side
        _one_run(ws, values, "warmup", False, args.interval)
        results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        order = [False, True, True, False] * args.repeats
        for i, with_monitor in enumerate(order):
            res = _one_run(ws, values, f"run_{i}", with_monitor, args.interval)
            results[with_monitor].append(res)
            label = "with   " if with_monitor else "without"
            print(
                f"run {i:2d} {label} monitor: {res['steps_per_s']:6.2f} steps/s  "
                f"{res['steps_per_cpu_s']:6.2f} steps/CPU-s  {res['msgs_per_s']:5.1f} msgs/s  "
                f"{res['kb_per_s']:6.1f} KiB/s  {res['flushes_per_s']:4.1f} flushes/s  "
                f"{res['flush_ms']:5.2f} CPU-ms/flush  monitor {res['monitor_cpu_pct']:5.2f}% of CPU",
                flush=True,
            )

    def med(mode: bool, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    print()
    print(f"{'':18s}{'without':>12s}{'with':>12s}")
    for key, unit in (("steps_per_s", "steps/s"), ("steps_per_cpu_s", "steps/CPU-s"), ("msgs_per_s", "msgs/s"),
                      ("kb_per_s", "KiB/s"), ("flushes_per_s", "flushes/s"), ("flush_ms", "CPU-ms/flush"),
                      ("monitor_cpu_pct", "monitor % of CPU")):
        print(f"{unit:18s}{med(False, key):12.2f}{med(True, key):12.2f}")

    def pair_ratios(key: str) -> list[float]:
        """With / without for each pair of neighbouring runs (ABBA: runs 0-1, 3-2, ...): the
        two runs of a pair saw the same machine load, which a ratio of medians would not use."""
        return [w[key] / wo[key] for wo, w in zip(results[False], results[True])]

    def fmt(xs: list[float]) -> str:
        return f"{statistics.median(xs):.3f} [{min(xs):.3f}..{max(xs):.3f}]"

    wall, cpu = pair_ratios("steps_per_s"), pair_ratios("steps_per_cpu_s")
    print(f"\nratio with/without monitor (median [min..max] over {len(wall)} pairs of runs, logging_steps=1, "
          f"flush interval {args.interval}s):")
    print(f"  steps/s      {fmt(wall)}  (wall clock: noisy on a shared machine)")
    print(f"  steps/CPU-s  {fmt(cpu)}  (process CPU time)")
    print(result_line("monitor_on_over_off_steps_per_s", wall))
    print(result_line("monitor_on_over_off_steps_per_cpu_s", cpu))


if __name__ == "__main__":
    main()
