"""Fixtures for real-browser tests: Jupyter servers on loopback and Debian Chromium via Playwright.

Servers are started once per session (starting JupyterLab costs seconds on 2 cores) in a private
temporary root that holds copies of the notebooks under test; each test gets a fresh browser
context and, at its end, a full-page screenshot in test-artifacts/ and the shutdown of every kernel
it started (so the next test runs on quiet CPUs).  Playwright's own browser download is never used:
the system `chromium` is launched through `executable_path`.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _frontends import ConsoleLog, shot  # noqa: E402
from _servers import JupyterServer, isolated_env  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("MODX_TEST_ARTIFACTS", REPO / "test-artifacts")).resolve()
HERE_NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
QUICKSTART = REPO / "examples" / "quickstart.ipynb"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1500, "height": 1100}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """tests/ui/test_browser_*.py drive a real browser: mark them so `-m "not ui"` can leave them out."""
    here = Path(__file__).resolve().parent
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if path.parent == here and path.name.startswith("test_browser_"):
            item.add_marker(pytest.mark.ui)


# -- browser ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if not path:
        pytest.fail("Debian's `chromium` is not on PATH: run scripts/setup.sh (it apt-installs chromium)")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright's Python package is missing: run scripts/setup.sh (extra 'ui-test')")

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _new_page(browser: object, console: ConsoleLog) -> tuple[object, object]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    context.set_default_timeout(30_000)
    pg = context.new_page()
    pg.on("console", console)
    return context, pg


def _screenshot_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def page(browser: object, console: ConsoleLog, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh page; at teardown its screenshot goes to test-artifacts/<test name>.png."""
    context, pg = _new_page(browser, console)
    yield pg
    try:
        shot(pg, ARTIFACTS, _screenshot_name(request))
    finally:
        context.close()


@pytest.fixture(scope="module")
def module_console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture(scope="module")
def module_page(browser: object, module_console: ConsoleLog) -> Iterator[object]:
    """One page shared by the tests of a module (open a notebook once, test several behaviours)."""
    context, pg = _new_page(browser, module_console)
    yield pg
    context.close()


@pytest.fixture(autouse=True)
def _screenshot_module_page(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests on the shared module page also leave a screenshot named after themselves."""
    yield
    if "module_page" in request.fixturenames:
        shot(request.getfixturevalue("module_page"), ARTIFACTS, _screenshot_name(request))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


# -- servers ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ui_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The servers' root directory: copies of the harness notebooks and of examples/quickstart.ipynb."""
    root = tmp_path_factory.mktemp("ui-root")
    for nb in HERE_NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(nb, root / nb.name)
    if QUICKSTART.exists():
        shutil.copy(QUICKSTART, root / QUICKSTART.name)
    return root


@pytest.fixture(scope="session")
def server_env(tmp_path_factory: pytest.TempPathFactory, ui_root: Path) -> dict[str, str]:
    # MODX_DEMO_DIR: the quickstart builds its tiny model and data there once, and every front end reuses them.
    return isolated_env(tmp_path_factory.mktemp("jupyter-home"), {"MODX_DEMO_DIR": str(ui_root / "demo")})


class _Servers:
    """Start each kind of server on first use and stop them all at the end of the session."""

    def __init__(self, root: Path, env: dict[str, str], logs: Path) -> None:
        self.root, self.env, self.logs = root, env, logs
        self.running: dict[tuple[str, str | None], JupyterServer] = {}

    def get(self, kind: str, notebook: str | None = None) -> JupyterServer:
        key = (kind, notebook)
        if key not in self.running:
            log = self.logs / f"server-{kind}{'-' + Path(notebook).stem if notebook else ''}.log"
            self.running[key] = JupyterServer(kind, self.root, log, self.env, notebook=notebook).start()
        return self.running[key]

    def stop_all(self) -> None:
        for server in self.running.values():
            server.stop()


@pytest.fixture(scope="session")
def servers(ui_root: Path, server_env: dict[str, str]) -> Iterator[_Servers]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pool = _Servers(ui_root, server_env, ARTIFACTS)
    yield pool
    pool.stop_all()


def _server_fixture(servers: _Servers, kind: str, notebook: str | None = None) -> Iterator[JupyterServer]:
    server = servers.get(kind, notebook)
    yield server
    server.shutdown_kernels()


@pytest.fixture
def lab(servers: _Servers) -> Iterator[JupyterServer]:
    """The session's JupyterLab; the kernels a test started are shut down after it."""
    yield from _server_fixture(servers, "lab")


@pytest.fixture
def notebook7(servers: _Servers) -> Iterator[JupyterServer]:
    """The session's Notebook 7 server."""
    yield from _server_fixture(servers, "notebook")


@pytest.fixture
def voila_for(servers: _Servers) -> Iterator[object]:
    """`voila_for("x.ipynb")` -> a Voila server rendering that notebook (one server per notebook)."""
    used: list[JupyterServer] = []

    def get(notebook: str) -> JupyterServer:
        server = servers.get("voila", notebook)
        used.append(server)
        return server

    yield get
    for server in used:
        server.shutdown_kernels()


@pytest.fixture(scope="module")
def module_lab(servers: _Servers) -> Iterator[JupyterServer]:
    """The session's JupyterLab for a module sharing one page; its kernels stop after the module."""
    yield from _server_fixture(servers, "lab")
