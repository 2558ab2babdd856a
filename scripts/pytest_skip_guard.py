"""pytest plugin used by scripts/test.sh: a skipped test fails the run unless the skip was expected.

A skip usually means "this was not tested" (a missing browser, a missing package), which must not
pass silently in CI.  Tests that may legitimately skip here say so with a marker:

    @pytest.mark.allow_skip(reason="needs a CUDA GPU")      # or @pytest.mark.gpu

xfail/xpass are not skips and are left to pytest.  Load with `-p pytest_skip_guard` and
`scripts/` on PYTHONPATH (test.sh does both).
"""

from __future__ import annotations

from typing import Iterator

import pytest

ALLOW_MARKERS = ("allow_skip", "gpu")


def _reason(longrepr: object) -> str:
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


class SkipGuard:
    """Sorts every skip into expected (allow-listed marker) or unexpected, and fails on the latter."""

    def __init__(self) -> None:
        self.allowed: list[str] = []
        self.unexpected: list[str] = []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
        outcome = yield
        report = outcome.get_result()
        if report.skipped and not hasattr(report, "wasxfail"):
            allowed = any(item.get_closest_marker(name) for name in ALLOW_MARKERS)
            (self.allowed if allowed else self.unexpected).append(f"{item.nodeid}: {_reason(report.longrepr)}")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        # A module-level pytest.skip() / importorskip() skips a whole file while collecting.
        if report.skipped:
            self.unexpected.append(f"{report.nodeid}: {_reason(report.longrepr)}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # "No tests collected" because a whole module skipped itself is a skip problem too.
        if self.unexpected and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        if self.allowed:
            tr.section("expected skips (allow_skip / gpu)")
            for line in self.allowed:
                tr.line(line)
        if self.unexpected:
            tr.section("UNEXPECTED SKIPS: these fail the run", red=True)
            for line in self.unexpected:
                tr.line(line, red=True)
            tr.line("Fix the cause, or mark a test that may skip here with @pytest.mark.allow_skip(reason=...).",
                    red=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_skip(reason): may be skipped without failing scripts/test.sh")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; may be skipped on CPU-only machines")
    config.pluginmanager.register(SkipGuard(), "modx_skip_guard")
