"""The release as a user gets it: build, check, install the wheel, run the README.

1. ``python -m build`` makes the sdist and the wheel in ``dist/``; ``twine check --strict``
   passes on both.
2. The wheel holds the package, ``py.typed`` and the licence, and nothing else (no tests,
   no bench); the sdist holds the source and no local state.
3. A new virtualenv, outside the checkout, gets the wheel (not an editable install) plus
   only what the quickstarts import (FastAPI and httpx). The README's Starlette and
   FastAPI quickstart blocks, read from README.md at run time so they cannot drift, run
   there against the installed package, and the console script prints the version.

Run it with ``make wheel-check``; it exits non-zero on the first failure. The clean venv
uses this interpreter, or the one ``WHEEL_CHECK_PYTHON`` names (to try another Python).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
PACKAGE = "asgi_sessions"
DISTRIBUTION = "asgi-server-sessions"
QUICKSTARTS = ("Starlette quickstart", "FastAPI quickstart")
# What the quickstart blocks import besides the package itself.
QUICKSTART_NEEDS = ["fastapi", "httpx"]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def run(*command: str | Path, cwd: Path = ROOT) -> str:
    print("+", " ".join(str(part) for part in command), flush=True)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def quickstart_source(readme: str) -> str:
    """The Python blocks of the README's quickstart sections, in order, as one script."""
    blocks = []
    for title in QUICKSTARTS:
        section = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", readme, re.S | re.M)
        if section is None:
            sys.exit(f"README.md has no '## {title}' section")
        found = PYTHON_BLOCK.findall(section[1])
        if not found:
            sys.exit(f"README.md's '## {title}' section has no python block")
        blocks += [
            f"# --- README.md, {title}, block {n}\n{code}" for n, code in enumerate(found, 1)
        ]
    return "\n".join(blocks)


def build() -> tuple[Path, Path]:
    shutil.rmtree(DIST, ignore_errors=True)
    run(sys.executable, "-m", "build", "--outdir", DIST)
    (wheel,) = DIST.glob("*.whl")
    (sdist,) = DIST.glob("*.tar.gz")
    run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)
    return wheel, sdist


def check_wheel(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    print(f"{wheel.name}:", *names, sep="\n  ")
    dist_info = next(name.split("/")[0] for name in names if ".dist-info/" in name)
    required = {f"{PACKAGE}/__init__.py", f"{PACKAGE}/py.typed", f"{dist_info}/licenses/LICENSE"}
    if missing := required - set(names):
        sys.exit(f"the wheel lacks {sorted(missing)}")
    strays = [n for n in names if not n.startswith((f"{PACKAGE}/", f"{dist_info}/"))]
    if strays:
        sys.exit(f"the wheel holds files outside the package: {strays}")
    # Package data too (the Redis store's Lua scripts, say): every file git tracks there.
    tracked = run("git", "ls-files", "--", PACKAGE).split()
    if missing := sorted(set(tracked) - set(names)):
        sys.exit(f"the wheel lacks files of the package: {missing}")


def check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    for required in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "PKG-INFO"):
        if required not in names:
            sys.exit(f"the sdist lacks {required}")
    local_state = re.compile(r"(^|/)(\.venv|\.ci|dist|__pycache__|results)/|\.sqlite3|\.pyc$")
    if strays := [name for name in names if local_state.search(name)]:
        sys.exit(f"the sdist holds local state or CI files: {strays}")


def install_and_run_quickstarts(wheel: Path) -> None:
    version = wheel.name.split("-")[1]
    script = quickstart_source((ROOT / "README.md").read_text())
    with tempfile.TemporaryDirectory(prefix="wheel-check-") as scratch:
        # Outside the checkout, so `import asgi_sessions` cannot find the source tree.
        work = Path(scratch)
        base = os.environ.get("WHEEL_CHECK_PYTHON", sys.executable)
        run(base, "-m", "venv", work / "venv")
        python = work / "venv" / "bin" / "python"
        run(python, "-m", "pip", "install", "-q", wheel, *QUICKSTART_NEEDS)
        (work / "quickstarts.py").write_text(script)
        where = run(python, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)", cwd=work)
        if not where.startswith(str(work / "venv")):
            sys.exit(f"{PACKAGE} was imported from {where.strip()}, not from the wheel")
        run(python, "-W", "error", "quickstarts.py", cwd=work)
        for command in ([work / "venv" / "bin" / DISTRIBUTION], [python, "-m", PACKAGE]):
            printed = run(*command, "--version", cwd=work)
            if printed != f"{DISTRIBUTION} {version}\n":
                sys.exit(f"--version printed {printed!r}, expected {DISTRIBUTION} {version}")
    print(f"the README quickstarts ran against {wheel.name} in a clean virtualenv ({base})")


def main() -> None:
    wheel, sdist = build()
    check_wheel(wheel)
    check_sdist(sdist)
    install_and_run_quickstarts(wheel)


if __name__ == "__main__":
    main()
