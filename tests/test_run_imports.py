"""Heavy imports stay off the caller's thread: the run package is cheap, warm-up is background."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_importing_the_run_package_and_the_cli_loads_no_ml_library():
    out = _run(
        "import sys, modx_widgets.run, modx_widgets.cli, modx_widgets.envcheck, modx_widgets.config.build\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'datasets', 'bitsandbytes') if m in sys.modules))"
    )
    assert out == "[]"


def test_warmup_imports_runs_once_in_a_background_thread():
    out = _run(
        "import sys, threading\n"
        "from modx_widgets.run import warmup_imports\n"
        "t = warmup_imports()\n"
        "same = warmup_imports() is t\n"
        "background = t is not threading.current_thread() and t.daemon\n"
        "t.join()\n"
        "print(same, background, all(m in sys.modules for m in ('torch', 'transformers', 'peft', 'datasets')))"
    )
    assert out == "True True True"


def test_warmup_imports_print_no_optional_kernel_warning():
    """bitsandbytes' hub-kernel warning at import would show up in the user's notebook cell."""
    import subprocess
    import sys

    code = "from modx_widgets.run.thread import _import_heavy; _import_heavy()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "kernels-community" not in out.stderr


def test_building_a_tiny_model_while_the_warmup_imports_run_does_not_race():
    """transformers' lazy module breaks when two threads import it at once; ours wait."""
    import subprocess
    import sys

    code = (
        "import tempfile\n"
        "from modx_widgets.run.thread import warmup_imports\n"
        "from modx_widgets.testing import make_tiny_model\n"
        "warmup_imports()\n"
        "make_tiny_model(tempfile.mkdtemp() + '/m')\n"
        "print('built')\n"
    )
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and "built" in out.stdout, out.stderr[-2000:]
