"""The suites, by the name ``python -m bench NAME`` takes, and what a full run runs.

Modules are imported only when their suite runs (``profile`` needs pyinstrument, the
chart matplotlib).
"""

from __future__ import annotations

SUITES = {
    "inprocess": "bench.suites.inprocess",
    "instructions": "bench.suites.instructions",
    "http": "bench.suites.http",
    "latency": "bench.suites.latency",
    "cluster": "bench.suites.cluster",
    "sqlite-workers": "bench.suites.sqlite_workers",
    "postgres": "bench.suites.postgres",
    "rolling": "bench.suites.rolling",
    "devices": "bench.suites.devices",
    "nested": "bench.suites.nested",
    "contention": "bench.suites.contention",
    "many-clients": "bench.suites.many_clients",
    "observability": "bench.suites.observability",
    "profile": "bench.suites.profile",
}

# A full run (``make bench``, ``python -m bench``): each suite with these arguments. The
# postgres suite's scale and purge figures at 100,000 sessions, not its default 1,000,000
# (about a minute instead of ten).
FULL: list[list[str]] = [
    ["inprocess"],
    ["instructions"],
    ["http"],
    ["latency"],
    ["cluster"],
    ["sqlite-workers"],
    ["postgres", "--sessions", "100000"],
    ["rolling"],
    ["devices"],
    ["nested"],
    ["contention"],
    ["observability"],
    ["many-clients"],
]
