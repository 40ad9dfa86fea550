"""What a new user trips over first: a store closed too early, and a max_age that keeps
nothing (issue 25, part 3)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from asgi_sessions import MemoryStore, Session, SessionMiddleware, SQLiteStore, Store
from tests.support import app_with, client_for
from tests.unavailable import unavailable


def _stores(tmp_path: Path) -> dict[str, Store]:
    return {"memory": MemoryStore(), "sqlite": SQLiteStore(tmp_path / "s.sqlite3")}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_store_used_after_aclose_answers_500_and_logs_closed(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _stores(tmp_path)[kind]
    await store.aclose()  # e.g. an in-process test block pasted into the app module

    async def visit(session: Session, request: Request) -> Any:
        session["visits"] = 1  # the save needs the store
        return {"ok": True}

    async with client_for(app_with(store, {"visit": visit})) as client:
        with caplog.at_level(logging.ERROR, logger="asgi_sessions"):
            response = await client.get("/visit")
    # A programming error, not an outage: no 503 and no Retry-After inviting retries.
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert "retry-after" not in response.headers
    assert "set-cookie" not in response.headers
    assert "is closed" in caplog.text


async def test_a_store_closed_before_the_save_answers_500(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()

    async def write(session: Session, request: Request) -> Any:
        session["x"] = 1
        await store.aclose()  # the save at response start finds it closed
        return PlainTextResponse("done")

    async with client_for(app_with(store, {"write": write})) as client:
        with caplog.at_level(logging.ERROR, logger="asgi_sessions"):
            response = await client.get("/write")
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    assert "is closed" in caplog.text


@pytest.mark.parametrize("max_age", [0, -1])
def test_a_max_age_that_keeps_nothing_is_logged_pointing_at_none(
    max_age: int, caplog: pytest.LogCaptureFixture
) -> None:
    # Accepted, not refused: Starlette accepts it and its own tests use both values
    # (tests/http/test_starlette_dropin.py keeps them passing unchanged).
    with caplog.at_level(logging.WARNING, logger="asgi_sessions"):
        SessionMiddleware(
            PlainTextResponse("x"), secret_key="k", store=MemoryStore(), max_age=max_age
        )
    assert f"max_age={max_age}" in caplog.text
    assert "use max_age=None" in caplog.text


def test_a_positive_or_browser_session_max_age_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="asgi_sessions"):
        SessionMiddleware(PlainTextResponse("x"), secret_key="k", store=MemoryStore(), max_age=None)
        SessionMiddleware(PlainTextResponse("x"), secret_key="k", store=MemoryStore(), max_age=60)
    assert caplog.text == ""


# -- make run: only what the demo needs ----------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def _make_dry_run(*argv: str) -> str:
    import shutil
    import subprocess

    if shutil.which("make") is None:
        unavailable("no make on the PATH (make test needs it; CI must have it)")
    done = subprocess.run(
        ["make", "-n", "-B", *argv], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout


def test_make_run_installs_only_the_package_and_uvicorn_under_its_own_stamp() -> None:
    commands = _make_dry_run("run")
    installs = [line for line in commands.splitlines() if " pip install " in line]
    # No dev or bench extras: only the device labels' parser beside the package.
    assert installs[-1].endswith("-e '.[devices]' uvicorn"), installs
    assert re.findall(r"\.\[([^\]]*)\]", commands) == ["devices"]
    assert "bench" not in commands
    assert "touch .venv/.installed-run" in commands
    assert "--port 8000" in commands


def test_make_run_takes_the_port_from_port() -> None:
    assert "--port 8001" in _make_dry_run("run", "PORT=8001")


def test_the_demo_imports_nothing_make_run_does_not_install() -> None:
    import ast
    import sys

    tree = ast.parse((ROOT / "demo_app.py").read_text())
    roots = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).partition(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if not (isinstance(node, ast.ImportFrom) and node.level)
    }
    third_party = roots - set(sys.stdlib_module_names) - {"__future__"}
    # starlette and aiosqlite are the package's own dependencies.
    assert third_party <= {"starlette", "asgi_sessions"}, third_party
