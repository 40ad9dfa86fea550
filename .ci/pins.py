"""The pinned toolchain: refresh it (``upgrade``) or report how far the newest releases
have moved from it (``drift``, never fails).

``make install`` and CI install exactly ``requirements/constraints.txt`` (and the build
backend from ``requirements/build-constraints.txt``), so a fresh clone passes next month
as it does today. Users get only the lower bounds in ``pyproject.toml``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ROOT / "requirements" / "constraints.txt"
BUILD_PINS = ROOT / "requirements" / "build-constraints.txt"
EXTRAS = ".[dev,bench]"
HEADER = """\
# The exact toolchain 'make install' and CI use (pip constraints: pins, not requirements).
# Users get the lower bounds in pyproject.toml. Refresh with 'make upgrade'; see what the
# newest releases would change with 'make drift' (report only) or 'make check-latest'.
# Python {python}, {platform}.
"""
BUILD_HEADER = (
    "# Build backend pins for 'make install' (pip --build-constraint); "
    "refreshed by 'make upgrade'.\n"
)


def _pip(python: Path, *args: str) -> str:
    return subprocess.run(
        [str(python), "-m", "pip", *args], check=True, text=True, capture_output=True, cwd=ROOT
    ).stdout


def _fresh_venv(where: Path) -> Path:
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    _pip(python, "install", "-q", "--upgrade", "pip")
    return python


def _freeze(python: Path) -> list[str]:
    lines = _pip(python, "freeze", "--exclude-editable").splitlines()
    return sorted(
        (line for line in lines if "==" in line), key=lambda line: line.lower().partition("==")[0]
    )


def upgrade() -> None:
    """Resolve the newest releases in clean venvs and write them as the new pins."""
    with tempfile.TemporaryDirectory() as tmp:
        python = _fresh_venv(Path(tmp) / "dev")
        _pip(python, "install", "-q", "-e", EXTRAS)
        pip_version = _pip(python, "--version").split()[1]
        pins = [f"pip=={pip_version}", *_freeze(python)]
        build = _fresh_venv(Path(tmp) / "build")
        _pip(build, "install", "-q", "hatchling")
        build_pins = [line for line in _freeze(build) if not line.startswith("pip==")]
    platform = f"{__import__('platform').system()} {__import__('platform').machine()}"
    python_version = ".".join(map(str, sys.version_info[:2]))
    PINS.write_text(
        HEADER.format(python=python_version, platform=platform) + "\n".join(pins) + "\n"
    )
    BUILD_PINS.write_text(BUILD_HEADER + "\n".join(build_pins) + "\n")
    print(
        f"{len(pins)} pins in {PINS.relative_to(ROOT)}, {len(build_pins)} in "
        f"{BUILD_PINS.relative_to(ROOT)}: now run make test."
    )


def _pinned() -> dict[str, str]:
    pins = {}
    for line in PINS.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def drift() -> None:
    """Print the packages whose newest release differs from the pin (exit 0 always)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        try:
            _pip(
                Path(sys.executable),
                "install",
                "-q",
                "--dry-run",
                "--ignore-installed",
                "--report",
                str(report),
                EXTRAS,
            )
        except subprocess.CalledProcessError as exc:
            print(f"drift: could not resolve the newest releases ({exc.stderr.strip()[-300:]})")
            return
        resolved = json.loads(report.read_text())["install"]
    pins = _pinned()
    changed = []
    for item in resolved:
        name = item["metadata"]["name"].lower().replace("_", "-")
        version = item["metadata"]["version"]
        if name != "asgi-server-sessions" and pins.get(name) != version:
            changed.append(f"  {name}: {pins.get(name, '(new)')} -> {version}")
    if changed:
        print(
            f"drift: {len(changed)} packages have newer releases than the pins "
            "(not blocking; 'make check-latest' tests them, 'make upgrade' adopts them):"
        )
        print("\n".join(sorted(changed)))
    else:
        print("drift: the pins are the newest releases.")


if __name__ == "__main__":
    {"upgrade": upgrade, "drift": drift}[sys.argv[1]]()
