"""Fixtures for the browser tests: one headless Chromium per run, one real uvicorn per module.

The demo runs in a subprocess exactly as ``make run`` serves it, with its SQLite file in a
temporary directory, so restarting the server keeps the sessions.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest

from tests.unavailable import unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM = Path("/usr/bin/chromium")
# Quiet and deterministic: no sandbox (containers run as root), no updates or sync calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
START_TIMEOUT = 15.0
ACTION_TIMEOUT_MS = 5_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DemoServer:
    """``python -m uvicorn demo_app:app`` on a loopback port, with its own sessions file."""

    def __init__(self, db: Path, log: Path) -> None:
        self.db = db
        self.log = log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "DEMO_SESSIONS_DB": str(self.db)}
        self._log_file = self.log.open("ab")
        command = [sys.executable, "-m", "uvicorn", "demo_app:app"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self._process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                self.stop()
                raise RuntimeError(f"The demo server exited at start-up:\n{self.log.read_text()}")
            try:
                # uvicorn binds only after the app's lifespan start-up has completed.
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"The demo server did not answer on {self.url} within "
                        f"{START_TIMEOUT} s:\n{self.log.read_text()}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        # SIGTERM lets uvicorn run the lifespan shutdown, which closes the SQLite store.
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the e2e package: launching is the slow part. (Package scope:
    the sync API runs its own event loop, which must be gone before the async tests run.)"""
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is missing: pip install -e '.[dev]'")
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    """The demo app served by a real uvicorn process, its sessions in a temporary file."""
    directory = tmp_path_factory.mktemp("demo")
    server = DemoServer(directory / "sessions.sqlite3", directory / "uvicorn.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def new_context(
    browser: Browser, demo_server: DemoServer
) -> Iterator[Callable[..., BrowserContext]]:
    """Make fresh browser profiles (separate cookie jars), closed after the test; keyword
    arguments go to Playwright's ``new_context`` (``user_agent=...``: another device)."""
    contexts: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        context = browser.new_context(base_url=demo_server.url, **options)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def context(new_context: Callable[[], BrowserContext]) -> BrowserContext:
    """A fresh browser profile: no cookies."""
    return new_context()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """A tab in ``context``."""
    return context.new_page()


@pytest.fixture
def screenshot() -> Callable[[Page, str], None]:
    """Save ``test-artifacts/e2e/<flow>.png`` so a human can see what the test saw."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def save(page: Page, flow: str) -> None:
        from playwright.sync_api import Error

        # Chromium on a loaded machine now and then answers "Unable to capture screenshot"
        # (Page.captureScreenshot): the page is fine, the capture is retried.
        for attempt in range(3):
            try:
                page.screenshot(path=ARTIFACTS / f"{flow}.png", full_page=True)
                return
            except Error as exc:
                if "Unable to capture screenshot" not in str(exc) or attempt == 2:
                    raise
                page.wait_for_timeout(500)

    return save
