"""A real Redis Cluster and a real Sentinel set for the tests (a pytest plugin).

Both are built from Debian's ``redis-server`` (and ``redis-cli``) on free loopback ports:

- ``redis_cluster``: 3 masters + 3 replicas made by ``redis-cli --cluster create``, shared
  by the test session; ``redis_cluster_url`` flushes every master and returns a
  ``redis+cluster://`` URL naming one seed node.
- ``redis_sentinel``: 1 master + 1 replica watched by 3 sentinels (quorum 2), shared;
  ``redis_sentinel_url`` flushes the master and returns a ``redis+sentinel://`` URL.
- ``private_redis_cluster`` / ``private_redis_sentinel``: a set of the test's own, with
  short failure-detection times, for tests that kill a master (so the shared sets keep
  their topology and later tests never wait for a failover they did not cause).

Without the binaries the tests that need them are skipped, except in CI (``CI=true``)
where that is a failure (the same rule as ``tests/redis_server.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from tests.unavailable import unavailable

SLOTS = 16_384
SERVICE = "sessions"
# Failure detection for sets whose masters a test kills. The shared sets use slow
# detection instead, so a busy CI machine never triggers a failover nobody asked for.
FAST_NODE_TIMEOUT_MS = 1000
FAST_DOWN_AFTER_MS = 1000
SHARED_NODE_TIMEOUT_MS = 15_000
SHARED_DOWN_AFTER_MS = 30_000


def _require(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        reason = f"{name} is not installed (apt-get install redis-server)"
        unavailable(reason)
    return binary


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nobody listens on right now."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def wait_until(condition: Callable[[], bool], what: str, *, timeout: float = 30.0) -> float:
    """Poll ``condition`` every 20 ms; return the seconds it took, or fail after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def _client(port: int) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1,
        decode_responses=True,
    )  # fmt: skip


def _answer(port: int, *command: str | int) -> object:
    """One command to one server, or ``None`` if it cannot answer right now."""
    try:
        with _client(port) as client:
            return client.execute_command(*command)
    except (redis.RedisError, OSError):
        return None


class Server:
    """One ``redis-server`` child process (a data node or a sentinel) on a fixed port."""

    def __init__(self, binary: str, workdir: Path, port: int, *args: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process and return once it answers PING."""
        self.process = subprocess.Popen(
            [self.binary, *self.args],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: self._alive_or_raise() and _answer(self.port, "PING") is True,
            f"redis-server on port {self.port} to answer PING",
            timeout=15,
        )

    def _alive_or_raise(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server on port {self.port} exited at start-up")
        return True

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as a crashed machine would (no shutdown save)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def frozen(server: Server) -> Iterator[None]:
    """The server stops (SIGSTOP), as a replica stuck on a slow disk or cut off would."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def _data_node_args(port: int, *extra: str) -> tuple[str, ...]:
    return (
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--protected-mode", "no",
        # Replicas sync at once (Redis 7 waits 5 s for more replicas to share the transfer).
        "--repl-diskless-sync-delay", "0",
        *extra,
    )  # fmt: skip


# -- Redis Cluster ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterNode:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    role: str
    master_id: str
    failed: bool
    slots: frozenset[int]


def _parse_nodes(text: str) -> list[ClusterNode]:
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        flags = fields[2].split(",")
        slots: set[int] = set()
        for item in fields[8:]:
            if item.startswith("["):  # a slot being migrated
                continue
            first, _, last = item.partition("-")
            slots.update(range(int(first), int(last or first) + 1))
        nodes.append(
            ClusterNode(
                node_id=fields[0],
                port=int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                role="master" if "master" in flags else "replica",
                master_id=fields[3],
                failed="fail" in flags or "fail?" in flags,
                slots=frozenset(slots),
            )
        )
    return nodes


class RedisClusterSet:
    """Six ``redis-server`` processes joined into 3 masters with a replica each."""

    def __init__(
        self, server: str, cli: str, workdir: Path, *, node_timeout_ms: int, masters: int = 3
    ) -> None:
        self.cli = cli
        self.node_timeout_ms = node_timeout_ms
        ports = free_ports(4 * masters)  # a client port and a cluster-bus port per node
        self.servers = [
            Server(
                server,
                workdir / f"node-{index}",
                ports[2 * index],
                *self._node_args(ports[2 * index], ports[2 * index + 1]),
            )
            for index in range(2 * masters)
        ]

    def _node_args(self, port: int, bus_port: int) -> tuple[str, ...]:
        return _data_node_args(
            port,
            "--cluster-enabled", "yes",
            "--cluster-port", str(bus_port),
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A replica may take over however long it was cut off from its master: the
            # tests want the failover, not Redis's guard against promoting a stale replica.
            "--cluster-replica-validity-factor", "0",
            # Only the dead master's slots stop; the others keep serving.
            "--cluster-require-full-coverage", "no",
        )  # fmt: skip

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming one seed node (the client finds the rest)."""
        return f"redis+cluster://{self.servers[0].address}"

    @property
    def seeds(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", server.port) for server in self.servers]

    def start(self) -> None:
        for server in self.servers:
            server.start()
        create = [
            self.cli, "--cluster", "create",
            *(server.address for server in self.servers),
            "--cluster-replicas", "1", "--cluster-yes",
        ]  # fmt: skip
        subprocess.run(
            create,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        self.wait_healthy()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def server(self, port: int) -> Server:
        return next(server for server in self.servers if server.port == port)

    def nodes(self) -> list[ClusterNode]:
        """The topology as the first running node sees it."""
        for server in self.servers:
            if server.running:
                text = _answer(server.port, "CLUSTER", "NODES")
                if isinstance(text, str):
                    return _parse_nodes(text)
        raise RuntimeError("no cluster node answers")

    def masters(self) -> list[ClusterNode]:
        return [node for node in self.nodes() if node.role == "master" and node.slots]

    def master_for_slot(self, slot: int) -> ClusterNode:
        return next(node for node in self.masters() if slot in node.slots)

    def healthy(self) -> bool:
        """Every running node says ``cluster_state:ok``, every slot has a live master, and
        every master has a replica that finished its initial sync."""
        running = [server for server in self.servers if server.running]
        for server in running:
            info = _answer(server.port, "CLUSTER", "INFO")
            if not isinstance(info, str) or "cluster_state:ok" not in info:
                return False
        try:
            nodes = self.nodes()
        except RuntimeError:
            return False
        masters = [node for node in nodes if node.role == "master" and node.slots]
        if sum(len(node.slots) for node in masters if not node.failed) != SLOTS:
            return False
        for master in masters:
            replicas = [n for n in nodes if n.master_id == master.node_id and not n.failed]
            if not any(_in_sync(replica.port) for replica in replicas):
                return False
        return True

    def wait_healthy(self, *, timeout: float = 60.0) -> float:
        return wait_until(self.healthy, "the cluster to be healthy", timeout=timeout)

    def flush(self) -> None:
        """Empty every master (replicas follow)."""
        for master in self.masters():
            with _client(master.port) as client:
                client.flushall()

    def kill_master_of(self, slot: int) -> ClusterNode:
        """SIGKILL the master that serves ``slot``; return it as it was."""
        master = self.master_for_slot(slot)
        self.server(master.port).kill()
        return master

    def wait_promoted(self, killed: ClusterNode, *, timeout: float = 30.0) -> float:
        """Wait until another node serves every slot ``killed`` served; return the seconds."""

        def taken_over() -> bool:
            try:
                masters = [node for node in self.masters() if not node.failed]
            except RuntimeError:
                return False
            served = set().union(*(node.slots for node in masters if node.port != killed.port))
            return killed.slots <= served

        what = f"a replica to take over from port {killed.port}"
        return wait_until(taken_over, what, timeout=timeout)

    def restart(self, port: int) -> None:
        """Start a killed node again; it rejoins (as a replica of whoever took over)."""
        self.server(port).start()
        self.wait_healthy()


def cluster_replica(cluster: RedisClusterSet, name: str) -> Server:
    """The replica of the master that serves the key ``name``."""
    master = cluster.master_for_slot(key_slot(name.encode()))
    replica = next(node for node in cluster.nodes() if node.master_id == master.node_id)
    return cluster.server(replica.port)


def _in_sync(port: int) -> bool:
    info = _answer(port, "INFO", "replication")  # redis-py parses INFO into a dict
    return (
        isinstance(info, dict)
        and info.get("master_link_status") == "up"
        and info.get("master_sync_in_progress") == 0
    )


# -- Sentinel ---------------------------------------------------------------------------


class RedisSentinelSet:
    """A master, its replica and three sentinels that watch them (quorum 2)."""

    def __init__(
        self, server: str, workdir: Path, *, down_after_ms: int, service: str = SERVICE
    ) -> None:
        self.service = service
        self.down_after_ms = down_after_ms
        master_port, replica_port, *sentinel_ports = free_ports(5)
        self.data = [
            Server(server, workdir / "master", master_port, *_data_node_args(master_port)),
            Server(
                server,
                workdir / "replica",
                replica_port,
                *_data_node_args(replica_port, "--replicaof", "127.0.0.1", str(master_port)),
            ),
        ]
        self.sentinels = []
        for index, port in enumerate(sentinel_ports):
            folder = workdir / f"sentinel-{index}"
            folder.mkdir(parents=True, exist_ok=True)
            # A sentinel rewrites its configuration file, so each has its own.
            config = folder / "sentinel.conf"
            config.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                "protected-mode no\n"
                f"dir {folder}\n"
                f"sentinel monitor {service} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
                f"sentinel failover-timeout {service} {max(3 * down_after_ms, 3000)}\n"
                f"sentinel parallel-syncs {service} 1\n"
            )
            self.sentinels.append(Server(server, folder, port, str(config), "--sentinel"))

    @property
    def url(self) -> str:
        hosts = ",".join(sentinel.address for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self) -> None:
        for server in [*self.data, *self.sentinels]:
            server.start()
        self.wait_healthy()

    def stop(self) -> None:
        for server in [*self.sentinels, *self.data]:
            server.stop()

    def master_port(self) -> int | None:
        """The master's port according to a majority of the sentinels, or ``None``."""
        votes: dict[int, int] = {}
        for sentinel in self.sentinels:
            reply = _answer(sentinel.port, "SENTINEL", "get-master-addr-by-name", self.service)
            if isinstance(reply, list) and len(reply) == 2:
                votes[int(reply[1])] = votes.get(int(reply[1]), 0) + 1
        for port, count in votes.items():
            if count >= 2:
                return port
        return None

    def healthy(self) -> bool:
        """The sentinels agree on a running master whose replica is in sync, and each
        sentinel knows the replica and the two other sentinels (needed to vote)."""
        port = self.master_port()
        if port is None or not any(s.port == port and s.running for s in self.data):
            return False
        role = _answer(port, "ROLE")
        if not isinstance(role, list) or role[0] != "master":
            return False
        replicas = [server for server in self.data if server.port != port]
        if not all(server.running and _in_sync(server.port) for server in replicas):
            return False
        for sentinel in self.sentinels:
            known = _answer(sentinel.port, "SENTINEL", "sentinels", self.service)
            seen = _answer(sentinel.port, "SENTINEL", "replicas", self.service)
            if not isinstance(known, list) or len(known) < 2:
                return False
            if not isinstance(seen, list) or not any(
                "s_down" not in _flags(entry) for entry in seen
            ):
                return False
        return True

    def wait_healthy(self, *, timeout: float = 60.0) -> float:
        return wait_until(self.healthy, "the sentinel set to be healthy", timeout=timeout)

    def flush(self) -> None:
        port = self.master_port()
        if port is None:
            raise RuntimeError("the sentinels agree on no master")
        with _client(port) as client:
            client.flushall()

    def kill_master(self) -> int:
        """SIGKILL the master; return its port."""
        port = self.master_port()
        if port is None:
            raise RuntimeError("the sentinels agree on no master")
        next(server for server in self.data if server.port == port).kill()
        return port

    def wait_promoted(self, killed: int, *, timeout: float = 30.0) -> float:
        """Wait until the sentinels name another master and it accepts writes."""

        def promoted() -> bool:
            port = self.master_port()
            if port is None or port == killed:
                return False
            role = _answer(port, "ROLE")
            return isinstance(role, list) and role[0] == "master"

        return wait_until(promoted, "the sentinels to promote the replica", timeout=timeout)

    def restart(self, port: int) -> None:
        """Start a killed server again; the sentinels turn it into the new master's replica."""
        next(server for server in self.data if server.port == port).start()
        self.wait_healthy()


def _flags(entry: object) -> str:
    # SENTINEL REPLICAS answers a flat [name, value, name, value, ...] list per replica.
    if isinstance(entry, list):
        pairs = dict(zip(entry[::2], entry[1::2], strict=False))
        return str(pairs.get("flags", ""))
    return ""


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterSet]:
    """The cluster shared by the whole test session (3 masters + 3 replicas)."""
    cluster = RedisClusterSet(
        _require("redis-server"),
        _require("redis-cli"),
        tmp_path_factory.mktemp("cluster"),
        node_timeout_ms=SHARED_NODE_TIMEOUT_MS,
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterSet) -> str:
    """The shared cluster's URL, with every master flushed before the test."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def private_redis_cluster(tmp_path: Path) -> Iterator[RedisClusterSet]:
    """A cluster of the test's own, quick to fail over, that it may kill nodes of."""
    cluster = RedisClusterSet(
        _require("redis-server"),
        _require("redis-cli"),
        tmp_path / "cluster",
        node_timeout_ms=FAST_NODE_TIMEOUT_MS,
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelSet]:
    """The sentinel set shared by the whole test session."""
    sentinel = RedisSentinelSet(
        _require("redis-server"),
        tmp_path_factory.mktemp("sentinel"),
        down_after_ms=SHARED_DOWN_AFTER_MS,
    )
    try:
        sentinel.start()
        yield sentinel
    finally:
        sentinel.stop()


@pytest.fixture
def redis_sentinel_url(redis_sentinel: RedisSentinelSet) -> str:
    """The shared sentinel set's URL, with the master flushed before the test."""
    redis_sentinel.flush()
    return redis_sentinel.url


@pytest.fixture
def private_redis_sentinel(tmp_path: Path) -> Iterator[RedisSentinelSet]:
    """A sentinel set of the test's own, quick to fail over, that it may kill the master of."""
    sentinel = RedisSentinelSet(
        _require("redis-server"), tmp_path / "sentinel", down_after_ms=FAST_DOWN_AFTER_MS
    )
    try:
        sentinel.start()
        yield sentinel
    finally:
        sentinel.stop()
