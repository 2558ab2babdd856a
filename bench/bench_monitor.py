"""Kernel-side cost of the live monitor during a run with logging_steps=1.

Trains the tiny local model (modx_widgets.testing) several times in one process,
alternating runs without and with a RunMonitor attached (ABBA order, so warm-up and
machine drift hit both sides alike), and prints side by side:

  * training steps/s, measured between the first and last Progress event (model loading
    and data preparation are excluded, they are the same with or without the monitor);
  * comm messages and bytes sent per second, counted by a stand-in comm that JSON-encodes
    each message as the kernel would (the zmq send itself is not included);
  * flushes per second and the mean time of one flush (render + encode);
  * the ratio of steps/s with / without the monitor.

    python bench/bench_monitor.py [--steps 120] [--repeats 2] [--interval 0.2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any


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
    ticks: list[tuple[float, int]] = []

    def timing(event: Any) -> None:  # attached in both modes, so its cost cancels out
        if isinstance(event, Progress):
            ticks.append((time.perf_counter(), event.step))

    run.add_listener(timing)
    monitor = None
    flush_s: list[float] = []
    if with_monitor:
        monitor = RunMonitor(flush_interval=interval)
        sink = monitor._sink

        def timed_sink(generation: int, batch: list) -> None:
            t = time.perf_counter()
            sink(generation, batch)
            flush_s.append(time.perf_counter() - t)

        monitor._sink = timed_sink  # type: ignore[method-assign]
        monitor.attach(run)
    msgs0, bytes0 = CountingComm.messages, CountingComm.bytes
    run.start()
    state = run.wait()
    if monitor is not None:
        monitor.detach()
    if state != "Completed" or len(ticks) < 3:
        raise SystemExit(f"benchmark run {name} ended {state} with {len(ticks)} progress events")
    (t0, s0), (t1, s1) = ticks[1], ticks[-1]  # skip the on_train_begin tick
    span = t1 - t0
    return {
        "steps_per_s": (s1 - s0) / span,
        "msgs_per_s": (CountingComm.messages - msgs0) / span,
        "kb_per_s": (CountingComm.bytes - bytes0) / span / 1024,
        "flushes_per_s": len(flush_s) / span,
        "flush_ms": 1000 * statistics.mean(flush_s) if flush_s else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps per run (logging_steps=1)")
    parser.add_argument("--repeats", type=int, default=2, help="ABBA pairs of runs")
    parser.add_argument("--interval", type=float, default=0.2, help="monitor flush interval in seconds")
    args = parser.parse_args()

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
                f"run {i:2d} {label} monitor: {res['steps_per_s']:7.2f} steps/s  "
                f"{res['msgs_per_s']:6.1f} msgs/s  {res['kb_per_s']:7.1f} KiB/s  "
                f"{res['flushes_per_s']:4.1f} flushes/s  {res['flush_ms']:5.1f} ms/flush",
                flush=True,
            )

    def med(mode: bool, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    print()
    print(f"{'':18s}{'without':>12s}{'with':>12s}")
    for key, unit in (("steps_per_s", "steps/s"), ("msgs_per_s", "msgs/s"), ("kb_per_s", "KiB/s"),
                      ("flushes_per_s", "flushes/s"), ("flush_ms", "ms/flush")):
        print(f"{unit:18s}{med(False, key):12.2f}{med(True, key):12.2f}")
    ratio = med(True, "steps_per_s") / med(False, "steps_per_s")
    print(f"\nsteps/s ratio with/without monitor: {ratio:.3f} "
          f"(median of {len(results[True])} runs each, logging_steps=1, flush interval {args.interval}s)")


if __name__ == "__main__":
    main()
