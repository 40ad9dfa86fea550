"""The servers suites run against, each described once, started at most once per run.

A service is one :class:`ServiceSpec`: its binary, its arguments for a host, port and
scratch directory, how to tell that it answers, and the URL a client uses (``REDIS`` here,
``POSTGRES`` in :mod:`bench.pg`)::

    with start(REDIS) as server:                  # a private server on a free loopback port
        use(server.url)

``Services`` (the harness's) hands a suite the URL of a shared server, started on first
use and stopped when the run ends, or the one the spec's environment variable names.
PostgreSQL refuses to run as root: a spec with a ``user`` runs as that user when we are
root (as CI is), its scratch directory handed over to it. ``uvicorn_server`` serves an
app factory from a process of its own.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

Run = Callable[..., None]
"""Runs a program from the service binary's directory: ``run("initdb", *arguments)``."""


class Unavailable(Exception):
    """A service cannot run here (no binary, no URL); the message says how to get it."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    binary: str
    env_var: str  # a URL here means "use that server, start none"
    install: str  # how to get the binary, for the message when it is missing
    argv: Callable[[str, int, Path], list[str]]  # (host, port, workdir) -> arguments
    url: Callable[[str, int], str]
    answers: Callable[[str, int], bool]
    prepare: Callable[[Run, Path], None] | None = None  # (run, workdir): e.g. initdb
    commands: Callable[[str], Counter[str]] | None = None  # server-side command counters
    locate: Callable[[str], str | None] = shutil.which  # binary name -> its path
    user: str | None = None  # run as this user when we are root
    stop_signal: int = signal.SIGTERM


@dataclass(frozen=True)
class Running:
    url: str
    host: str
    port: int


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def stop_process(
    process: subprocess.Popen[bytes], timeout: float = 5, sig: int = signal.SIGTERM
) -> None:
    """``sig`` (SIGTERM), wait up to ``timeout`` seconds, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.02)


@contextmanager
def start(spec: ServiceSpec, host: str = "127.0.0.1") -> Iterator[Running]:
    """Run a private ``spec`` server on a free port of ``host``, its files in a temporary
    directory."""
    binary = spec.locate(spec.binary)
    if binary is None:
        raise Unavailable(f"{spec.binary} not found ({spec.install}), and {spec.env_var} unset")
    port = free_port(host)
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as directory:
        workdir = Path(directory)
        as_user = _as_user(spec.user, workdir)
        if spec.prepare is not None:
            spec.prepare(_runner(as_user, Path(binary).parent, workdir), workdir)
        command = [*as_user, binary, *spec.argv(host, port, workdir)]
        with open(workdir / "server.log", "wb") as log:
            process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_until(lambda: spec.answers(host, port), process, f"{spec.name} on {port}")
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}: {_tail(workdir / 'server.log')}") from None
            yield Running(spec.url(host, port), host, port)
        finally:
            stop_process(process, sig=spec.stop_signal)


def _as_user(user: str | None, workdir: Path) -> list[str]:
    """The command prefix that runs a program as ``user`` if we are root (and gives it
    ``workdir``); setpriv execs, so signals reach the server itself."""
    if user is None or os.geteuid() != 0:
        return []
    account = pwd.getpwnam(user)
    os.chown(workdir, account.pw_uid, account.pw_gid)
    return ["setpriv", f"--reuid={user}", f"--regid={account.pw_gid}", "--init-groups"]


def _runner(as_user: list[str], bindir: Path, workdir: Path) -> Run:
    def run(program: str, *args: str) -> None:
        done = subprocess.run(
            [*as_user, str(bindir / program), *args], cwd=workdir, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")

    return run


def _tail(log: Path) -> str:
    text = log.read_text(errors="replace").strip() if log.exists() else ""
    return text[-500:] or "no output"


class Services:
    """The run's shared servers: each started on first use, all stopped by ``close()``."""

    def __init__(self, allowed: bool = True) -> None:
        self.allowed = allowed
        self._running: dict[str, str] = {}
        self._stack = ExitStack()

    def url(self, spec: ServiceSpec) -> str:
        """The URL of ``spec``'s server; raises ``Unavailable`` if there can be none."""
        if spec.name in self._running:
            return self._running[spec.name]
        if not self.allowed:
            raise Unavailable(f"services are off (--services none), so no {spec.name}")
        url = os.environ.get(spec.env_var) or self._stack.enter_context(start(spec)).url
        print(f"{spec.name}: {url}", file=sys.stderr, flush=True)
        self._running[spec.name] = url
        return url

    def external(self, spec: ServiceSpec) -> bool:
        """Whether ``spec``'s server is one the environment named (not ours to fill)."""
        return bool(os.environ.get(spec.env_var))

    def close(self) -> None:
        self._stack.close()
        self._running.clear()


# -- the services ------------------------------------------------------------------------


def probe(host: str, port: int, ask: bytes, expect: bytes) -> bool:
    """Whether the server at ``host:port`` answers ``ask`` with something starting ``expect``."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(ask)
            return sock.recv(64).startswith(expect)
    except OSError:
        return False


def _redis_commands(url: str) -> Counter[str]:
    """How many times the server ran each command so far (``INFO commandstats``)."""
    import redis

    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def _redis_argv(host: str, port: int, workdir: Path) -> list[str]:
    # No persistence; protected mode off: bound to loopback only.
    options = f"--port {port} --bind {host} --dir {workdir} --appendonly no --protected-mode no"
    return [*options.split(), "--save", ""]


REDIS = ServiceSpec(
    name="redis",
    binary="redis-server",
    env_var="REDIS_URL",
    install="apt-get install -y redis-server",
    argv=_redis_argv,
    url=lambda host, port: f"redis://{host}:{port}/0",
    answers=lambda host, port: probe(host, port, b"PING\r\n", b"+PONG"),
    commands=_redis_commands,
)


@contextmanager
def uvicorn_server(
    factory: str, env: dict[str, str], *, host: str = "127.0.0.1"
) -> Iterator[tuple[str, int]]:
    """Serve ``factory`` (``module:function``) with uvicorn on a free port of ``host`` (any
    loopback address, 127.0.0.2 standing for another machine), from the checkout's root.

    Yields ``(base_url, server_pid)`` once the port accepts connections; stops the server
    (SIGTERM, so lifespan shutdown runs) at the end.
    """
    port = free_port(host)
    # Keep-alive outlives a CPU-starved client's pause (uvicorn's default is 5 s), so a
    # load generator on a busy machine does not meet connections closed under it.
    options = f"--workers 1 --host {host} --port {port} --no-access-log --timeout-keep-alive 120"
    command = [sys.executable, "-m", "uvicorn", "--factory", factory, *options.split()]
    command += ["--log-level", "warning"]
    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen(command, env={**os.environ, **env}, cwd=root)
    try:
        wait_until(lambda: _accepts(host, port), server, f"uvicorn serving {factory}")
        yield f"http://{host}:{port}", server.pid
    finally:
        stop_process(server, timeout=20)


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False
