"""scripts/pytest_skip_guard.py, the plugin scripts/test.sh loads: an unexpected skip fails the run,
an allow-listed one does not.  Each case runs a real pytest in a subprocess on a throw-away test file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _pytest(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_case.py").write_text(textwrap.dedent(source))
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "pytest_skip_guard", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )


@pytest.mark.parametrize("skip", [
    'def test_x():\n    pytest.skip("no browser")',
    '@pytest.mark.skipif(True, reason="no browser")\ndef test_x():\n    pass',
    'pytest.importorskip("a_module_that_does_not_exist_here")\ndef test_x():\n    pass',
], ids=["skip-call", "skipif-marker", "module-importorskip"])
def test_an_unexpected_skip_fails_the_run_and_is_listed(tmp_path, skip):
    proc = _pytest(tmp_path, "import pytest\n\ndef test_ok():\n    pass\n\n" + skip + "\n")
    assert proc.returncode == 1, proc.stdout
    assert "UNEXPECTED SKIPS" in proc.stdout
    assert "test_case.py" in proc.stdout.split("UNEXPECTED SKIPS")[1]


@pytest.mark.parametrize("marker", ['allow_skip(reason="needs a CUDA GPU")', "gpu"])
def test_a_skip_marked_as_expected_passes_and_is_reported(tmp_path, marker):
    proc = _pytest(tmp_path, f"""
        import pytest

        def test_ok():
            pass

        @pytest.mark.{marker}
        def test_gpu_only():
            pytest.skip("no GPU here")

        @pytest.mark.xfail(reason="known limitation", strict=True)
        def test_known():
            assert False
    """)
    assert proc.returncode == 0, proc.stdout
    assert "expected skips" in proc.stdout and "test_gpu_only" in proc.stdout
    assert "UNEXPECTED" not in proc.stdout


def test_a_failure_still_fails_with_the_usual_exit_code(tmp_path):
    proc = _pytest(tmp_path, "def test_bad():\n    assert 1 == 2\n")
    assert proc.returncode == 1, proc.stdout
    assert "UNEXPECTED" not in proc.stdout
