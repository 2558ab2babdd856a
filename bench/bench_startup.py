"""Startup cost of the Prepare page: what a user waits for before the widget appears.

Prints, side by side:
  * cold `import modx_widgets` in a fresh interpreter (median of N) and which heavy
    libraries it loaded (must be none);
  * cold `from modx_widgets import PrepareWidget` (pulls in ipywidgets, bqplot, anywidget);
  * the first `PrepareWidget()` in a fresh interpreter (import included);
  * the median of N further constructions, measured once the background warm-up
    (transformers import, GPU probe, environment check) has finished, and once while it runs.

Target: under 0.3 s for the cold import and the median construction on a 2-core machine.
For bench/run_all.sh it prints RESULT lines of measured seconds / 0.3 s, one ratio per run
(there is no second side to pair with), so a ratio <= 1 meets the target.

    python bench/bench_startup.py [--runs 7]
    python bench/bench_startup.py --quick      # 2 runs each (a smoke run, ~10 s on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR / "llamafactory"))

from harness import result_line  # noqa: E402  (shared RESULT format)

HEAVY = ("torch", "transformers", "peft", "datasets", "bitsandbytes", "accelerate", "bqplot")
TARGET_S = 0.3


def _fresh(code: str) -> dict:
    """Run `code` in a new interpreter; it prints one JSON object as its last line."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


IMPORT_PACKAGE = """
    import json, sys, time
    t = time.perf_counter()
    import modx_widgets
    dt = time.perf_counter() - t
    print(json.dumps({"s": dt, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)

IMPORT_WIDGET = """
    import json, time
    t = time.perf_counter()
    from modx_widgets import PrepareWidget
    print(json.dumps({"s": time.perf_counter() - t}))
"""

CONSTRUCT = """
    import json, statistics, sys, threading, time
    root = sys.argv[1] if len(sys.argv) > 1 else %r
    t = time.perf_counter()
    from modx_widgets import PrepareWidget
    first_widget = PrepareWidget(workspace=root)
    first = time.perf_counter() - t

    def timed(n):
        out = []
        for _ in range(n):
            t = time.perf_counter()
            w = PrepareWidget(workspace=root)
            out.append(time.perf_counter() - t)
            w.settle(60)
        return out

    busy = timed(%d)  # while the first widget's warm-up imports run in the background
    first_widget.settle(120)
    for thread in threading.enumerate():  # the transformers warm-up thread
        if thread is not threading.main_thread() and thread.daemon:
            thread.join(120)
    idle = timed(%d)
    print(json.dumps({"first": first, "busy": busy, "idle": idle}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="repetitions for each median")
    parser.add_argument("--quick", action="store_true", help="smoke sizes: 2 runs of everything (~10 s)")
    args = parser.parse_args()
    if args.quick:
        args.runs = 2
    few = max(2 if args.quick else 3, args.runs // 2)  # for the slower, secondary figures

    imports = [_fresh(IMPORT_PACKAGE) for _ in range(args.runs)]
    import_s = statistics.median(r["s"] for r in imports)
    heavy = sorted({m for r in imports for m in r["heavy"]})
    widget_import_s = statistics.median(_fresh(IMPORT_WIDGET)["s"] for _ in range(few))
    with tempfile.TemporaryDirectory(prefix="modx-bench-") as root:
        res = _fresh(CONSTRUCT % (root, few, args.runs))
    busy_s = statistics.median(res["busy"])
    idle_s = statistics.median(res["idle"])

    def row(name: str, seconds: float, target: bool = False) -> str:
        verdict = ("  ok" if seconds < TARGET_S else "  SLOW") if target else ""
        return f"  {name:<58} {seconds * 1000:8.1f} ms{verdict}"

    print(f"modx_widgets startup ({args.runs} runs, python {sys.version.split()[0]})")
    print(row("cold `import modx_widgets` (median)", import_s, target=True))
    print(f"  {'heavy libraries loaded by that import':<58} {', '.join(heavy) or 'none'}")
    print(row("cold `from modx_widgets import PrepareWidget` (median)", widget_import_s))
    print(row("first PrepareWidget() in a fresh process, imports included", res["first"]))
    print(row("PrepareWidget() median, background warm-up idle", idle_s, target=True))
    print(row("PrepareWidget() median, while the warm-up imports run", busy_s))
    print(f"  ratio construction / target: {idle_s / TARGET_S:.2f}; import / target: {import_s / TARGET_S:.2f}")
    # measured / target per run: <= 1 meets the target (the names say which way they read)
    print(result_line("import_s_over_target", [r["s"] / TARGET_S for r in imports], 1.0))
    print(result_line("prepare_widget_s_over_target", [s / TARGET_S for s in res["idle"]], 1.0))


if __name__ == "__main__":
    main()
