"""Timing and statistics every suite shares: interleaved rounds, spreads, ratios.

Each comparison runs its sides in interleaved rounds (A B C, then C B A, ...) and reports
medians over rounds, so drift of a shared machine (CPU frequency, noisy neighbours, the
page cache) hits every side alike. Ratios are taken per round, against the floor measured
in the same round, then summarised.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from math import inf, nan
from typing import Any

from .harness import table

Round = Callable[[], Awaitable[float]]
"""One round of one side: runs it and returns that round's figure."""


async def interleave(sides: Mapping[str, Round], rounds: int) -> dict[str, list[float]]:
    """Each side's figure per round, the sides alternating order round by round."""
    names = list(sides)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for number in range(rounds):
        for name in names if number % 2 == 0 else reversed(names):
            samples[name].append(await sides[name]())
    return samples


async def time_ops(
    ops: Mapping[str, Callable[[], Awaitable[Any]]], rounds: int, n: int
) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds per call of each op: medians over ``rounds`` interleaved rounds
    of ``n`` calls, after one uncounted round (connections, scripts, prepared statements).

    CPU time is this process's alone: on a busy machine the steadier figure, and in Python
    the client, not the server, is where a store call spends much of its time.
    """
    cpu: dict[str, list[float]] = {name: [] for name in ops}

    def side(name: str, op: Callable[[], Awaitable[Any]]) -> Round:
        async def one_round() -> float:
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(n):
                await op()
            cpu[name].append((time.process_time() - cpu_started) / n)
            return (time.perf_counter() - started) / n

        return one_round

    sides = {name: side(name, op) for name, op in ops.items()}
    await interleave(sides, 1)
    for samples in cpu.values():
        samples.clear()
    wall = await interleave(sides, rounds)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in ops}


def ops_table(m: Mapping[str, tuple[float, float]], what: str = "operation") -> list[str]:
    """Markdown of :func:`time_ops`' figures: wall and CPU µs per call."""
    rows = ([name, f"{wall * 1e6:,.1f}", f"{cpu * 1e6:,.1f}"] for name, (wall, cpu) in m.items())
    return table([what, "wall us:", "CPU us:"], rows)


def goals_table(
    m: Mapping[str, tuple[float, float]], goals: Sequence[tuple[str, str, str, float]]
) -> list[str]:
    """Ratios of :func:`time_ops`' figures on both clocks, each goal ``(label, ours, against,
    at most)`` judged on wall time."""
    rows = []
    for label, ours, against, goal in goals:
        wall, cpu = (m[ours][i] / m[against][i] for i in (0, 1))
        verdict = "PASS" if wall <= goal else "**MISS**"
        rows.append([label, f"{wall:.2f}x", f"{cpu:.2f}x", f"≤ {goal}x wall: {verdict}"])
    return table(["ratio", "wall:", "CPU:", "goal"], rows)


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, p10, p90) of ``values``."""
    med = statistics.median(values)
    if len(values) < 2:
        return med, med, med
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    return med, deciles[0], deciles[-1]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fmt(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    """``median [p10-p90]`` of ``values`` times ``scale``."""
    med, p10, p90 = (v * scale for v in spread(values))
    return f"{med:,.{digits}f} [{p10:,.{digits}f}-{p90:,.{digits}f}]"


@dataclass(frozen=True)
class Goal:
    """At most ``limit`` times the floor (with ``peer``: ``limit`` times the peer's ratio)."""

    limit: float
    peer: str | None = None

    def text(self, sign: str) -> str:
        return f"{sign} {self.limit:.2f}x" + (f" `{self.peer}`" if self.peer else "")


@dataclass(frozen=True)
class Case:
    """One comparison: ``config`` (ours) against ``floor`` on ``endpoint``, peers beside it."""

    label: str
    endpoint: str
    floor: str
    config: str
    goals: tuple[Goal, ...] = ()
    peers: tuple[str, ...] = ()


def _ratios(samples: Mapping[str, Mapping[str, list[float]]], case: Case, name: str) -> list[float]:
    mine = samples.get(name, {}).get(case.endpoint)
    floor = samples.get(case.floor, {}).get(case.endpoint)
    if not mine or not floor:
        return []
    return [a / b for a, b in zip(mine, floor, strict=False)]


def ratio_rows(
    samples: Mapping[str, Mapping[str, list[float]]],
    cases: Sequence[Case],
    *,
    higher_is_better: bool = False,
) -> list[dict[str, Any]]:
    """One row per case and side that ran: the median per-round ratio, p10-p90, verdict."""
    rows = []
    for case in cases:
        per_round = {name: _ratios(samples, case, name) for name in (case.config, *case.peers)}
        medians = {name: spread(r)[0] for name, r in per_round.items() if r}
        for name, ratios in per_round.items():
            if not ratios:
                continue
            med, p10, p90 = spread(ratios)
            verdict, goal_text, limits = "info", "-", []
            if name == case.config and case.goals:
                for goal in case.goals:
                    limits.append(goal.limit * (medians.get(goal.peer, nan) if goal.peer else 1))
                met = [med >= limit if higher_is_better else med <= limit for limit in limits]
                verdict = "PASS" if all(met) else "MISS"
                sign = "≥" if higher_is_better else "≤"
                goal_text = " and ".join(goal.text(sign) for goal in case.goals)
            rows.append(
                {
                    "case": case.label,
                    "endpoint": case.endpoint,
                    "config": name,
                    "floor": case.floor,
                    "ours": name == case.config,
                    "ratio": med,
                    "p10": p10,
                    "p90": p90,
                    "goal": goal_text,
                    "limit": (max if higher_is_better else min)(limits) if limits else None,
                    "verdict": verdict,
                }
            )
    return rows


# -- two bases, several runs ------------------------------------------------------------

BASES = ("wall", "cpu")
"""Wall time (what a client waits) and this process's CPU time (what the code costs)."""

Samples = Mapping[str, Mapping[str, list[float]]]
"""Per configuration and endpoint, one figure per round."""


def relative_spread(values: Sequence[float]) -> float:
    """(p90 - p10) / median: how far apart a figure's rounds land, as a fraction of it."""
    med, p10, p90 = spread(values)
    return (p90 - p10) / med if med else inf


def steadier(case: Case, runs: Sequence[Mapping[str, Samples]]) -> tuple[str, dict[str, float]]:
    """The basis to judge ``case`` on, and each basis's relative spread.

    The basis whose per-round ratios (ours over the floor) spread less: the median over
    runs of each run's ``relative_spread``. Wall time on a tie, or where CPU is missing.
    """
    spreads = {}
    for basis in BASES:
        per_run = [_ratios(run[basis], case, case.config) for run in runs if basis in run]
        per_run = [r for r in per_run if r]
        spreads[basis] = statistics.median(relative_spread(r) for r in per_run) if per_run else inf
    return ("cpu" if spreads["cpu"] < spreads["wall"] else "wall"), spreads


def judged_rows(
    runs: Sequence[Mapping[str, Samples]], cases: Sequence[Case]
) -> list[dict[str, Any]]:
    """Ratio rows on both bases over several runs, each goal judged on the steadier basis.

    ``runs`` holds each run's samples by basis (``{"wall": samples, "cpu": samples}``).
    A row's figure on a basis is the median of the per-round ratios of every run pooled,
    with their p10-p90, and ``per_run`` each run's own median. A goal is met only where
    every run meets it on the case's basis, a peer's ratio taken from the same run.
    """
    rows = []
    for case in cases:
        basis, spreads = steadier(case, runs)
        # per basis and configuration: each run's median per-round ratio, and all rounds
        medians: dict[str, dict[str, list[float]]] = {b: {} for b in BASES}
        pooled: dict[str, dict[str, list[float]]] = {b: {} for b in BASES}
        for b in BASES:
            for name in (case.config, *case.peers):
                per_run = [_ratios(run[b], case, name) for run in runs if b in run]
                if per_run and all(per_run):
                    medians[b][name] = [statistics.median(r) for r in per_run]
                    pooled[b][name] = [x for r in per_run for x in r]
        for name in (case.config, *case.peers):
            if name not in pooled["wall"]:
                continue
            row: dict[str, Any] = {
                "case": case.label,
                "endpoint": case.endpoint,
                "config": name,
                "floor": case.floor,
                "ours": name == case.config,
                "basis": basis,
                "spread": spreads,
                "goal": "-",
                "limit": None,
                "met": None,
                "verdict": "info",
            }
            for b in BASES:
                if name in pooled[b]:
                    med, p10, p90 = spread(pooled[b][name])
                    row[b] = {"ratio": med, "p10": p10, "p90": p90, "per_run": medians[b][name]}
            row.update({k: row[basis][k] for k in ("ratio", "p10", "p90")})
            if name == case.config and case.goals:
                chosen = medians[basis]

                def limit(goal: Goal, figures: Mapping[str, float]) -> float:
                    return goal.limit * (figures.get(goal.peer, nan) if goal.peer else 1)

                met = [
                    all(value <= limit(g, {p: chosen[p][n] for p in chosen}) for g in case.goals)
                    for n, value in enumerate(chosen[name])
                ]  # a missing peer makes nan a limit, and nothing is <= nan: not met
                pooled_peers = {p: spread(pooled[basis][p])[0] for p in pooled[basis]}
                row["goal"] = " and ".join(goal.text("≤") for goal in case.goals)
                row["limit"] = min(limit(g, pooled_peers) for g in case.goals)
                row["met"] = met
                row["peers_per_run"] = {g.peer: chosen.get(g.peer) for g in case.goals if g.peer}
                row["verdict"] = verdict(met, basis)
            rows.append(row)
    return rows


def verdict(met: Sequence[bool], basis: str) -> str:
    """``PASS (CPU)`` where every run met the goal; else ``MISS (wall; met in 2 of 3 runs)``."""
    name = "CPU" if basis == "cpu" else basis
    if met and all(met):
        return f"PASS ({name})"
    if any(met):
        return f"MISS ({name}; met in {sum(met)} of {len(met)} runs)"
    return f"MISS ({name})"


def ratio_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown for :func:`ratio_rows`' rows: one ratio per case, with its goal and verdict."""
    cells = []
    for r in rows:
        verdict = f"**{r['verdict']}**" if r["verdict"] == "MISS" else r["verdict"]
        ratio = f"{r['ratio']:.2f}x [{r['p10']:.2f}-{r['p90']:.2f}]"
        cells.append([r["case"], f"`{r['config']}`", f"`{r['floor']}`", ratio, r["goal"], verdict])
    head = ["case", "configuration", "against", "ratio [p10-p90]:", "goal", "verdict"]
    return table(head, cells)
