"""What a user does in a notebook front end, as Playwright steps with explicit waits.

JupyterLab 4 and Notebook 7 share the notebook DOM (cells, prompts, the kernel execution
indicator), so one `NotebookPage` drives both; `VoilaPage` covers Voila, where the notebook runs
on page load and only outputs are shown.  Everything waits on something visible in the page
(a selector, a prompt number, the kernel indicator), never on a fixed sleep.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from _servers import JupyterServer

if TYPE_CHECKING:  # Playwright is imported by the browser fixture, with a clear error if missing
    from playwright.sync_api import ConsoleMessage, Page

# Texts a widget front end writes when a widget cannot be shown (ipywidgets' manager, anywidget).
WIDGET_ERROR_TEXTS = ("Error displaying widget", "Error rendering widget", "Failed to create view",
                      "Failed to load view class", "Could not create a view")
_DONE_PROMPT = re.compile(r"^\[\d+\]:$")


def wait_until(check: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.25) -> object:
    """Poll `check` until it returns something truthy; fail with `what` (and the last value) if it never does."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last seen: {last!r})")


@dataclass
class ConsoleLog:
    """Browser console messages, kept so a failing widget's reason shows up in the test report."""

    messages: list[str] = field(default_factory=list)

    def __call__(self, message: ConsoleMessage) -> None:
        self.messages.append(f"[{message.type}] {message.text}")

    def widget_errors(self) -> list[str]:
        return [m for m in self.messages if any(t in m for t in WIDGET_ERROR_TEXTS)]


def widget_error_texts(page: Page) -> list[str]:
    """Every visible 'Error displaying widget'-style message in the page, with its surrounding text."""
    found: list[str] = []
    for text in WIDGET_ERROR_TEXTS:
        loc = page.get_by_text(text)
        found += [loc.nth(i).inner_text()[:300] for i in range(loc.count())]
    return found


def shot(page: Page, artifacts: Path, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/ (kept by CI, looked at by people)."""
    artifacts.mkdir(parents=True, exist_ok=True)
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


class NotebookPage:
    """A notebook open in JupyterLab 4 or Notebook 7."""

    def __init__(self, page: Page, server: JupyterServer, name: str) -> None:
        self.page = page
        self.server = server
        self.name = name

    # -- opening --------------------------------------------------------------------------
    def open(self, timeout_s: float = 90) -> "NotebookPage":
        if self.server.kind == "lab":
            url = self.server.url(f"/lab/tree/{self.name}", reset="")
        else:
            url = self.server.url(f"/notebooks/{self.name}")
        self.page.goto(url)
        self.page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=timeout_s * 1000)
        # The indicator reads "idle" before any kernel exists, so also wait for the server to report
        # this notebook's kernel as idle with the page connected to it.
        wait_until(self._kernel_connected, timeout_s, f"a connected kernel for {self.name}")
        self.wait_kernel_idle(timeout_s)
        if self.server.kind == "lab":
            # Fold the file browser away: the widget gets the width, the screenshots show more of it.
            current = self.page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
            if current.count():
                current.first.click()
        return self

    def _kernel_connected(self) -> bool:
        self.fail_on_dialog()
        for session in self.server.sessions():
            kernel = session.get("kernel") or {}
            if session.get("path") == self.name and kernel.get("execution_state") == "idle" \
                    and kernel.get("connections", 0) >= 1:
                return True
        return False

    def fail_on_dialog(self) -> None:
        """A modal dialog (kernel picker, error box) blocks every click: fail at once with its text."""
        dialog = self.page.locator(".jp-Dialog")
        if dialog.count() and dialog.first.is_visible():
            raise AssertionError(f"unexpected dialog in the page: {dialog.first.inner_text()[:500]!r}")

    # -- kernel ---------------------------------------------------------------------------
    def kernel_status(self) -> str:
        """'idle', 'busy', 'starting', ... as the notebook's execution indicator shows it."""
        loc = self.page.locator(".jp-Notebook-ExecutionIndicator").first
        return (loc.get_attribute("data-status") or "") if loc.count() else ""

    def wait_kernel_idle(self, timeout_s: float = 60) -> None:
        wait_until(lambda: self.fail_on_dialog() or self.kernel_status() == "idle", timeout_s,
                   "the kernel to be idle")

    def prompts(self) -> list[str]:
        """The input prompt of every code cell: '[ ]:' never run, '[*]:' running, '[3]:' done."""
        return [p.strip() for p in self.page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()]

    def no_cell_executing(self) -> bool:
        """True when the kernel is idle and no cell shows the running prompt '[*]:'."""
        return self.kernel_status() == "idle" and not any("*" in p for p in self.prompts())

    # -- running cells --------------------------------------------------------------------
    def _menu(self, menu: str, item: str) -> None:
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).first.click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).first.click()

    def run_all(self, timeout_s: float = 120) -> None:
        """Run All Cells from the Run menu and wait until every code cell has its number."""
        self._menu("Run", "Run All Cells")

        def finished() -> bool:
            self.fail_on_dialog()
            prompts = self.prompts()
            return bool(prompts) and all(_DONE_PROMPT.match(p) for p in prompts) and self.kernel_status() == "idle"

        wait_until(finished, timeout_s, "every cell to finish", every_s=0.5)

    def run_code(self, code: str, timeout_s: float = 60) -> None:
        """Type `code` into a new cell at the end (as a user would) and run it with Shift+Enter."""
        before = len(self.prompts())
        self.page.locator(".jp-Notebook .jp-Cell").last.locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("b")
        wait_until(lambda: len(self.prompts()) == before + 1, 10, "the new cell")
        self.page.keyboard.press("Enter")
        # insert_text types no key events, so the editor adds no brackets or indentation of its own.
        self.page.keyboard.insert_text(code)
        self.page.keyboard.press("Shift+Enter")
        last = self.page.locator(".jp-CodeCell .jp-InputPrompt").nth(before)
        wait_until(lambda: _DONE_PROMPT.match(last.inner_text().strip()), timeout_s, f"cell {code[:40]!r} to run")

    def error_outputs(self) -> list[str]:
        """Tracebacks shown in cell outputs (each trimmed to its last lines)."""
        loc = self.page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
        texts = [loc.nth(i).inner_text() for i in range(loc.count())]
        return ["\n".join(t.strip().splitlines()[-8:]) for t in texts if "Traceback" in t or "Error" in t]


class VoilaPage:
    """A notebook rendered by Voila: cells run when the page loads, only outputs are shown."""

    def __init__(self, page: Page, server: JupyterServer) -> None:
        self.page = page
        self.server = server

    def open(self, ready_selector: str, timeout_s: float = 180) -> "VoilaPage":
        self.page.goto(self.server.url("/"))
        self.page.wait_for_selector(ready_selector, timeout=timeout_s * 1000)
        return self

    def error_outputs(self) -> list[str]:
        loc = self.page.locator('[data-mime-type="application/vnd.jupyter.stderr"]')
        texts = [loc.nth(i).inner_text() for i in range(loc.count())]
        return ["\n".join(t.strip().splitlines()[-8:]) for t in texts if "Traceback" in t or "Error" in t]


def line_points(page: Page, selector: str) -> int:
    """How many points the first bqplot line under `selector` draws, read from its SVG path.

    bqplot draws a Lines mark as `<path class="line" d="M..L..L..">`; each M/L command is a point."""
    return int(page.evaluate(
        """(sel) => {
            const path = document.querySelector(sel + " path.line");
            const d = path ? (path.getAttribute("d") || "") : "";
            return (d.match(/[ML]/g) || []).length;
        }""",
        selector,
    ))
