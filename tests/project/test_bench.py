"""The benchmark harness runs end to end, so it cannot rot between full runs.

A quick run on memory only (no server): the in-process suite (with the chart), and the
rolling, nested, contention, observability, devices and sqlite-workers suites, through
``python -m bench``'s own entry point; the instructions suite on two cells (valgrind); and
the PostgreSQL suites, briefly, on a real server. Figures are not checked: performance is
measured in benchmarks, never asserted in tests (what a run kept is: every append, and the
control's losses).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.__main__ import main
from tests.unavailable import unavailable

MEMORY_ONLY = "bare,starlette,starsessions-memory,ours-memory,ours-cookie"


@pytest.mark.parametrize(
    "suite",
    [
        ["inprocess", "--only", MEMORY_ONLY, "--rounds", "2", "--per-round", "5"],
        ["rolling", "--sessions", "3", "--minutes", "2"],
        ["nested", "--rounds", "2", "--requests", "5"],
        ["contention", "--stores", "memory,sqlite", "--rounds", "2", "--saves", "8"],
        ["observability", "--rounds", "2", "--per-round", "5"],
        ["devices", "--rounds", "2", "--requests", "5"],
        ["sqlite-workers", "--seconds", "0.3", "--clients", "8"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_quick_memory_only_run_writes_its_results(
    suite: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--quick", "--services", "none", "--out", str(tmp_path), *suite]) == 0
    name = suite[0]
    report = json.loads((tmp_path / f"{name}.json").read_text())
    assert report["command"].startswith("python -m bench --quick")
    assert "Skipped" not in (tmp_path / f"{name}.md").read_text()
    assert f"`{report['command']}`" in capsys.readouterr().out


def test_the_instructions_suite_counts_each_cell_and_its_ratio(tmp_path: Path) -> None:
    # valgrind is CI's (.ci/run installs it): missing there is a failure, here a skip.
    if shutil.which("valgrind") is None:
        unavailable("valgrind is not installed (Debian: apt-get install valgrind)")
    argv = ["instructions", "--only", "bare/read,ours-memory/read"]
    assert main(["--quick", "--services", "none", "--out", str(tmp_path), *argv]) == 0
    cells = json.loads((tmp_path / "instructions.json").read_text())["cells"]
    assert set(cells) == {"bare/read", "ours-memory/read"}
    assert all(cell["per_request"] > 0 for cell in cells.values())
    assert cells["ours-memory/read"]["ratio"] > 0  # against bare/read, so not nan
    assert cells["ours-memory/read"]["verdict"].endswith("(instructions)")
    assert "| `ours-memory/read` |" in (tmp_path / "instructions.md").read_text()


def test_a_quick_postgres_run_writes_every_figure(
    postgres_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTGRES_URL", postgres_server)  # the tests' server, not a new one
    argv = ["postgres", "--sessions", "300", "--rounds", "2", "--ops", "5", "--saves", "3",
            "--processes", "2", "--clients", "2", "--writers", "2", "--seconds", "0.5"]  # fmt: skip
    assert main(["--quick", "--out", str(tmp_path), *argv]) == 0
    report = (tmp_path / "postgres.md").read_text()
    assert "Skipped" not in report
    assert "FAILED" not in report
    data = json.loads((tmp_path / "postgres.json").read_text())
    assert set(data) >= {"latency", "concurrency", "scale", "purge", "processes"}


def test_the_contention_suite_keeps_every_append_and_its_control_loses_items(
    tmp_path: Path,
) -> None:
    argv = ["contention", "--stores", "memory", "--writers", "2,8", "--rounds", "1"]
    assert main(["--quick", "--services", "none", "--out", str(tmp_path), *argv]) == 0
    data = json.loads((tmp_path / "contention.json").read_text())
    assert data["appends_kept"] and data["control_lost"]
    for n, cell in data["stores"]["memory"].items():
        assert cell["append"]["worst_kept"] == int(n) and cell["append"]["bad_batches"] == 0
        assert cell["reassign"]["worst_kept"] < int(n)
        assert cell["plain"]["kept"] == cell["plain"]["batches"]
    assert "| 8 | append | 8/8 |" in (tmp_path / "contention.md").read_text()


def test_the_contention_suite_counts_round_trips_on_postgres(
    postgres_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTGRES_URL", postgres_server)
    argv = ["contention", "--stores", "postgres", "--writers", "2", "--rounds", "1",
            "--saves", "2", "--count-batches", "1"]  # fmt: skip
    assert main(["--quick", "--out", str(tmp_path), *argv]) == 0
    cells = json.loads((tmp_path / "contention.json").read_text())["stores"]["postgres"]["2"]
    assert cells["append"]["worst_kept"] == 2
    assert all(cell["round_trips"] > 0 for cell in cells.values())  # the relay pass ran


def test_the_latency_suite_puts_postgres_behind_the_delay_and_reports_round_trips(
    postgres_server: str, tmp_path: Path
) -> None:
    # The suite starts a private server of its own; the fixture makes a missing PostgreSQL
    # a skip here and a failure in CI, as for every other PostgreSQL test.
    argv = ["latency", "--service", "postgres", "--delays", "0,1", "--requests", "6"]
    assert main(["--quick", "--out", str(tmp_path), *argv]) == 0
    report = (tmp_path / "latency.md").read_text()
    assert "### PostgreSQL" in report
    assert "#### +1 ms per round trip" in report
    trips = json.loads((tmp_path / "latency.json").read_text())["stores"]["postgres"]
    assert set(trips["round_trips"]) == {"ours", "floor"}
    assert set(trips["latency_us"]["1.0"]["ours"]) == {"untouched", "read", "write", "first write"}


def test_the_in_process_run_draws_the_ratio_chart(tmp_path: Path) -> None:
    main(
        [
            "--quick",
            "--services",
            "none",
            "--out",
            str(tmp_path),
            "inprocess",
            "--only",
            MEMORY_ONLY,
            "--rounds",
            "2",
            "--per-round",
            "5",
        ]
    )
    chart = tmp_path / "ratios.png"
    assert chart.read_bytes().startswith(b"\x89PNG")
    rows = json.loads((tmp_path / "inprocess.json").read_text())["ratios"]
    assert {row["config"] for row in rows} >= {"ours-memory", "starsessions-memory", "starlette"}


def test_the_in_process_run_reports_cpu_the_basis_runs_and_each_rounds_load(
    tmp_path: Path,
) -> None:
    argv = ["inprocess", "--only", MEMORY_ONLY, "--rounds", "2", "--per-round", "5"]
    assert (
        main(["--quick", "--services", "none", "--out", str(tmp_path), *argv, "--runs", "2"]) == 0
    )
    report = json.loads((tmp_path / "inprocess.json").read_text())
    assert len(report["runs"]) == 2
    for run in report["runs"]:
        assert [r["round"] for r in run["rounds"]] == [1, 2]
        names = MEMORY_ONLY.split(",")
        for number, kept in enumerate(run["rounds"]):
            # Every configuration each round, the order rotated one place a round.
            assert kept["order"] == names[number:] + names[:number]
            assert kept["blocks"] >= 2  # each cell in slices taken in turn
            assert len(kept["load_start"]) == len(kept["load_end"]) == 3
        assert set(run["samples_cpu_us"]) == set(run["samples_us"]) == set(MEMORY_ONLY.split(","))
    judged = [row for row in report["ratios"] if row["met"] is not None]
    assert judged
    for row in judged:
        assert len(row["met"]) == len(row["wall"]["per_run"]) == len(row["cpu"]["per_run"]) == 2
        basis = "CPU" if row["basis"] == "cpu" else "wall"
        assert row["verdict"].startswith(("PASS", "MISS")) and f"({basis}" in row["verdict"]
    text = (tmp_path / "inprocess.md").read_text()
    assert "| run 1 | run 2 |" in text
    assert "CPU ratio [p10-p90]" in text


def test_a_quick_in_process_run_is_one_run(tmp_path: Path) -> None:
    argv = ["inprocess", "--only", "bare,ours-memory", "--rounds", "1", "--per-round", "3"]
    assert main(["--quick", "--services", "none", "--out", str(tmp_path), *argv]) == 0
    assert len(json.loads((tmp_path / "inprocess.json").read_text())["runs"]) == 1


def test_a_suite_that_needs_a_server_says_why_it_skipped(tmp_path: Path) -> None:
    assert main(["--quick", "--services", "none", "--out", str(tmp_path), "postgres"]) == 0
    assert "Skipped: services are off" in (tmp_path / "postgres.md").read_text()


def test_a_full_run_replaces_the_readme_table_between_its_markers(tmp_path: Path) -> None:
    from bench.harness import include_in_readme

    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\n\n## FAQ\n")
    include_in_readme("run line\n\n#### Ratios\n\n| a |\n", readme)
    assert readme.read_text() == (
        "# x\n\n<!-- bench:start -->\nrun line\n\n#### Ratios\n\n| a |\n"
        "<!-- bench:end -->\n\n## FAQ\n"
    )
    readme.write_text("no markers")
    with pytest.raises(SystemExit, match="no <!-- bench:start -->"):
        include_in_readme("body", readme)


def test_the_delay_relay_delays_each_round_trip_and_counts_one_turn_per_request() -> None:
    import socket
    import threading
    import time

    from bench.netpath import RelayProcess

    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    relay = RelayProcess("127.0.0.1", server.getsockname()[1])
    try:
        relay.set_delay(20)
        with socket.create_connection(("127.0.0.1", relay.port)) as client:
            for _ in range(3):
                started = time.perf_counter()
                client.sendall(b"ping")
                assert client.recv(64) == b"ping"
                assert time.perf_counter() - started >= 0.02
        assert relay.turns() == 3
    finally:
        relay.close()
        server.close()


def test_a_full_run_keeps_the_sections_it_does_not_write(tmp_path: Path) -> None:
    from bench.harness import Section, kept_sections

    results = tmp_path / "RESULTS.md"
    results.write_text(
        "# benchmark\n\n## Suite A\n\nold figures\n\n## Where the time goes\n\nfindings\n"
    )
    assert kept_sections(results, {Section("Suite A", []).title}) == [
        "## Where the time goes\n\nfindings\n"
    ]
    assert kept_sections(tmp_path / "missing.md", set()) == []
