"""A service behind an added network delay, for the latency suite; any TCP service.

Two ways, the first that works here:

- ``netem``: the server runs in a network namespace the bench creates, reached over a veth
  pair whose host end carries ``tc qdisc ... netem delay D``: the kernel holds every packet
  from the bench to the server for D, so each round trip costs D more. Needs root, ``ip``,
  ``tc`` and a kernel with ``sch_netem``.
- ``relay``: the server on loopback behind :mod:`bench.relay`, a process that forwards the
  bench's bytes D after they arrive and the replies at once. The same added round-trip
  time, set by a userspace timer instead of the kernel's.

Either way a relay with no delay in front of the server counts round trips (turns).
Namespaces, links and qdiscs are removed on the way out, on failure too; a namespace left
by a killed run is removed by the next one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from .services import Running, ServiceSpec, start, stop_process

PREFIX = "asgibench"


class RelayProcess:
    """``python -m bench.relay`` in front of ``host:port``, steered over its stdin."""

    def __init__(self, host: str, port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.relay", host, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self._ask(None).split()[1])

    def _ask(self, line: str | None) -> str:
        assert self.process.stdin and self.process.stdout
        if line is not None:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the delay relay exited")
        return answer.strip()

    def set_delay(self, ms: float) -> None:
        self._ask(f"delay {ms}")

    def turns(self) -> int:
        return int(self._ask("turns"))

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()  # its command loop ends, and so does the relay
        stop_process(self.process)  # type: ignore[arg-type]
        if self.process.stdout:
            self.process.stdout.close()


@dataclass
class DelayedService:
    """Where to reach the server with the added delay, and where to count round trips."""

    kind: str  # "netem" or "relay"
    how: str  # one sentence for the report
    url: str  # through the delay
    counting_url: str  # through a relay with no delay, which counts turns
    direct_url: str  # no delay, no relay: for server-side statistics
    relay: RelayProcess
    netem_device: str | None = None
    netem_namespace: str | None = None

    def set_delay(self, ms: float) -> None:
        if self.netem_device is None:
            self.relay.set_delay(ms)
        else:
            _run(
                "tc",
                "qdisc",
                "replace",
                "dev",
                self.netem_device,
                "root",
                "netem",
                "delay",
                f"{ms:g}ms",
            )


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"`{' '.join(command)}` failed: {done.stderr.strip() or done.returncode}")


def netem_unavailable() -> str | None:
    """Why netem cannot be used here, or ``None`` if it can (a throwaway veth is tried)."""
    if os.geteuid() != 0:
        return "not root (netns, veth and tc need CAP_NET_ADMIN)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (apt-get install -y iproute2)"
    device = f"abprobe{os.getpid() % 100000}"  # interface names: at most 15 characters
    try:
        _run("ip", "link", "add", device, "type", "veth", "peer", "name", device + "b")
        _run("tc", "qdisc", "add", "dev", device, "root", "netem", "delay", "1ms")
    except OSError as exc:
        return f"{exc} (the kernel lacks sch_netem?)"
    finally:
        subprocess.run(["ip", "link", "del", device], capture_output=True, check=False)
    return None


def _remove_stale_namespaces() -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        pid = name.removeprefix(PREFIX)
        if name.startswith(PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@contextmanager
def _namespace(pid: int) -> Iterator[tuple[str, str, str]]:
    """A namespace joined to this one by a veth pair: (namespace, host device, server ip).

    The pair gets a /30 of the link-local range (169.254/16, never routed off a link), from
    the pid so that two runs at once do not collide.
    """
    _remove_stale_namespaces()
    namespace, device = f"{PREFIX}{pid}", f"abhost{pid % 100000}"
    index = pid % 16000
    net = f"169.254.{1 + index // 64}.{(index % 64) * 4}"
    base = net.rsplit(".", 1)[0]
    last = int(net.rsplit(".", 1)[1])
    host_ip, server_ip = f"{base}.{last + 1}", f"{base}.{last + 2}"
    try:
        _run("ip", "netns", "add", namespace)
        _run(
            "ip", "link", "add", device, "type", "veth", "peer", "name", "eth0", "netns", namespace
        )
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", device)
        _run("ip", "link", "set", device, "up")
        _run("ip", "-n", namespace, "addr", "add", f"{server_ip}/30", "dev", "eth0")
        _run("ip", "-n", namespace, "link", "set", "eth0", "up")
        _run("ip", "-n", namespace, "link", "set", "lo", "up")
        _run("tc", "qdisc", "add", "dev", device, "root", "netem", "delay", "0ms")
        yield namespace, device, server_ip
    finally:
        # Deleting the namespace deletes its veth end, which deletes the pair and its qdisc.
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", device], capture_output=True, check=False)


@contextmanager
def delayed(spec: ServiceSpec, prefer: str = "auto") -> Iterator[DelayedService]:
    """A private ``spec`` server behind an adjustable delay (``prefer``: auto, netem, relay)."""
    why_not = netem_unavailable() if prefer != "relay" else "--path relay"
    if why_not is not None and prefer == "netem":
        raise RuntimeError(f"netem is unavailable: {why_not}")
    with ExitStack() as stack:
        if why_not is None:
            namespace, device, ip = stack.enter_context(_namespace(os.getpid()))
            server: Running = stack.enter_context(
                start(spec, host=ip, port=7000, wrap=["ip", "netns", "exec", namespace])
            )
            how = (
                f"`tc qdisc ... netem delay D` on the host end of a veth pair into network "
                f"namespace `{namespace}`, where {spec.binary} listens on {ip}:7000"
            )
        else:
            server = stack.enter_context(start(spec))
            how = (
                f"netem unavailable ({why_not}); a relay process (`bench/relay.py`) on "
                f"loopback forwards each client->server burst to {spec.binary} D after it "
                "arrives (thread + `time.sleep` to the deadline), replies at once"
            )
        relay = RelayProcess(server.host, server.port)
        stack.callback(relay.close)
        relay_url = spec.url("127.0.0.1", relay.port)
        yield DelayedService(
            kind="netem" if why_not is None else "relay",
            how=how,
            url=server.url if why_not is None else relay_url,
            counting_url=relay_url,
            direct_url=server.url,
            relay=relay,
            netem_device=device if why_not is None else None,
            netem_namespace=namespace if why_not is None else None,
        )
