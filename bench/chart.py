"""The ratio table as a picture: per case, ours and the peers as bars, the goal as a mark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

OURS = "#1f6feb"
PEERS = {"starlette": "#d4a017", "starsessions": "#8250df"}
OTHER = "#8c959f"


def _colour(config: str) -> str:
    if config.startswith("ours-"):
        return OURS if not config.endswith("-autoload") else "#7fb2f5"
    for family, colour in PEERS.items():
        if config.startswith(family):
            return colour if not config.endswith("-autoload") else colour + "99"
    return OTHER


def draw(rows: list[dict[str, Any]], path: Path) -> Path:
    """Horizontal bars, one group per case, each bar a configuration's ratio to the floor.

    Autoload variants stay in the table only: the chart compares each library's default.
    """
    rows = [row for row in rows if not row["config"].endswith("-autoload")]
    cases = list(dict.fromkeys(row["case"] for row in rows))
    height = 0.8
    fig, ax = plt.subplots(figsize=(10, 0.36 * len(rows) + 0.3 * len(cases) + 1.2), dpi=110)
    y = 0.0
    ticks, labels = [], []
    for case in cases:
        members = [row for row in rows if row["case"] == case]
        top = y
        for row in members:
            ax.barh(y, row["ratio"], height=height, color=_colour(row["config"]))
            ax.errorbar(
                row["ratio"],
                y,
                xerr=[[row["ratio"] - row["p10"]], [row["p90"] - row["ratio"]]],
                color="#444",
                capsize=2,
                lw=0.8,
            )
            if row.get("limit") is not None:  # the goal, as a tick across the bar
                ax.plot([row["limit"]] * 2, [y - 0.45, y + 0.45], color="#cf222e", lw=2)
            mark = "" if row["verdict"] == "info" else f"  {row['verdict']}"
            ax.text(
                max(row["p90"], row["ratio"]) + 0.05,
                y,
                f"{row['config']}  {row['ratio']:.2f}x{mark}",
                va="center",
                fontsize=8,
                fontweight="bold" if row["ours"] else "normal",
            )
            y += 1
        ticks.append((top + y - 1) / 2)
        labels.append(f"{case}\nagainst {members[0]['floor']}")
        y += 0.6
    ax.axvline(1.0, color="#444", lw=0.8, ls=":")
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(row["p90"] for row in rows) * 1.45)
    ax.set_xlabel("time per request ÷ the floor's (median of per-round ratios, p10-p90 bars)")
    ax.set_title(
        "asgi-server-sessions (blue) against Starlette (gold) and starsessions (purple); "
        "red tick: goal",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
