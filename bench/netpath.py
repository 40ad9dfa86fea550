"""A TCP relay that delays what clients send to a server and counts round trips: the
latency suite's network hop, for any TCP service.

    python -m bench.netpath TARGET_HOST TARGET_PORT    # prints "port N", then obeys stdin:
        delay 1.0     every byte from a client reaches the target 1.0 ms after it arrived
        turns         prints how many client->server turns it has relayed so far

It runs in its own process with a thread per direction, so its timers do not wait for the
benchmark's event loop. The delay applies to the client->server direction only, so every
request/reply round trip costs it once, as ``tc qdisc ... netem delay`` on the client's
side would. (The kernel's way needs root and ``sch_netem``, which the benchmark machine's
kernel lacks; ``bench/netpath.py`` as of 3dee60c ran the server in a network namespace
behind netem where it could.)

A *turn* is a burst of client bytes after a reply (or at the start): one round trip, however
many commands a pipeline or a script packs into it. Counting turns here measures round trips
for any TCP protocol without a wrapped client.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .services import Running, ServiceSpec, start, stop_process

HOW = (
    "a relay process (`bench/netpath.py`) on loopback forwards each client->server burst "
    "to the server D after it arrives (thread + `time.sleep` to the deadline), replies at once"
)


class Relay:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.delay = 0.0  # seconds
        self.turns = 0
        self._lock = threading.Lock()

    def serve(self, listener: socket.socket) -> None:
        while True:
            client, _ = listener.accept()
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        server = socket.create_connection(self.target)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        replied = [True]  # whether the last bytes went server->client: the next send is a turn

        def upstream() -> None:
            # One burst at a time: a request/reply protocol has one in flight, so holding
            # the next recv back until this burst is sent delays nothing else.
            with contextlib.suppress(OSError):
                while data := client.recv(1 << 16):
                    due = time.perf_counter() + self.delay
                    if replied[0]:
                        replied[0] = False
                        with self._lock:
                            self.turns += 1
                    if (wait := due - time.perf_counter()) > 0:
                        time.sleep(wait)  # clock_nanosleep: microsecond resolution
                    server.sendall(data)
                server.shutdown(socket.SHUT_WR)

        thread = threading.Thread(target=upstream, daemon=True)
        thread.start()
        with contextlib.suppress(OSError):
            while data := server.recv(1 << 16):
                replied[0] = True
                client.sendall(data)
            client.shutdown(socket.SHUT_WR)
        thread.join()
        client.close()
        server.close()


def main() -> None:
    relay = Relay((sys.argv[1], int(sys.argv[2])))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    threading.Thread(target=relay.serve, args=(listener,), daemon=True).start()
    print(f"port {listener.getsockname()[1]}", flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "delay":
            relay.delay = float(argument) / 1000
            print("ok", flush=True)
        elif command == "turns":
            print(relay.turns, flush=True)


class RelayProcess:
    """``python -m bench.netpath`` in front of ``host:port``, steered over its stdin."""

    def __init__(self, host: str, port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.netpath", host, str(port)],
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
        if not (answer := self.process.stdout.readline()):
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


@contextmanager
def delayed(spec: ServiceSpec) -> Iterator[tuple[Running, RelayProcess]]:
    """A private ``spec`` server, and a relay in front of it (no delay until one is set)."""
    with start(spec) as server:
        relay = RelayProcess(server.host, server.port)
        try:
            yield server, relay
        finally:
            relay.close()


if __name__ == "__main__":
    main()
