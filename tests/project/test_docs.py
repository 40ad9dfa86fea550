"""Every Python block in the README and the guides runs, so the docs cannot rot.

The blocks of one file run in order in one namespace (like a reader pasting them into
one module run as a script, so ``if __name__ == "__main__":`` blocks run too), inside a
temporary working directory so default SQLite files land there.

Each quickstart also runs on its own, as a reader copies it: its blocks alone in an
``app.py``, once as ``python app.py`` and once served by uvicorn over real HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import README, ROOT, python_blocks, section_source

DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_python_block_runs(
    path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    postgres_url: str,
) -> None:
    blocks = python_blocks(path)
    assert blocks, f"{path.name} has no python blocks"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("POSTGRES_URL", postgres_url)
    namespace: dict[str, object] = {"__name__": "__main__"}
    for line, source in blocks:
        # dont_inherit: this module's `from __future__ import annotations` must not leak
        # into the blocks (Litestar resolves a handler's annotations at registration).
        code = compile(source, f"{path.name}:{line}", "exec", dont_inherit=True)
        exec(code, namespace)  # noqa: S102 - running our own documentation is the point


# Each quickstart: what two requests from one client answer.
QUICKSTARTS = {
    "Starlette quickstart": (
        "POST",
        "/comment",
        ["Thanks for your comment!", "You've already commented."],
    ),
    "FastAPI quickstart": ("GET", "/visits", ['{"visits":1}', '{"visits":2}']),
    "Litestar quickstart": (
        "POST",
        "/comment",
        ["Thanks for your comment!", "You've already commented."],
    ),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(cwd: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )


def _wait_until_listening(port: int, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"uvicorn exited early:\n{server.communicate()[0]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("uvicorn did not start listening within 30 s")


@pytest.mark.parametrize("title", list(QUICKSTARTS))
def test_each_quickstart_runs_alone_as_a_file(title: str, tmp_path: Path) -> None:
    """Its blocks alone, pasted into one app.py, run as a script and serve under uvicorn."""
    method, path, answers = QUICKSTARTS[title]
    (tmp_path / "app.py").write_text(section_source(title))
    script = subprocess.run(
        [sys.executable, "-W", "error", "app.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert script.returncode == 0, script.stderr
    port = _free_port()
    server = _serve(tmp_path, port)
    try:
        _wait_until_listening(port, server)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            got = [client.request(method, path) for _ in answers]
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[0]
    # Importing app.py under uvicorn closed no store: both requests were served normally.
    assert [(r.status_code < 300, r.text) for r in got] == [(True, a) for a in answers], log
    assert "closed" not in log


def test_the_migration_guide_runs_both_importers_in_its_code() -> None:
    code = "".join(source for _, source in python_blocks(ROOT / "docs" / "migrating.md"))
    assert "FromStarlette(" in code
    assert "FromStarsessions(" in code
