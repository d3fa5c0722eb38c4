"""End to end through the real CLI: a run in a subprocess killed with SIGKILL mid-grid resumes (in this process)
without redoing or losing any finished cell."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from conftest import TINY_SUITE, run_and_kill_after
from lossbench.cli import app

SIX_CELLS = TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [cross_entropy, mse, {name: mse, over: outputs}]")


def finished(out: Path) -> dict[str, str]:
    """cell id → started_at of every result file, each of which must be complete JSON."""
    return {p.stem: json.loads(p.read_text())["started_at"] for p in (out / "cells").glob("*.json")}


def test_sigkill_mid_grid_then_resume(write_suite, tmp_path: Path, cli_env: dict[str, str], cache_dir: Path) -> None:
    suite = write_suite(SIX_CELLS.replace("epochs: 2", "epochs: 3"))
    out = tmp_path / "out"
    # No report: resuming is about the cells (a report takes seconds of a fresh process).
    command = [sys.executable, "-m", "lossbench", "run", str(suite), "--out", str(out), "--plain", "--no-report"]
    done_lines = run_and_kill_after(command, cli_env, finished=2)
    assert done_lines == 2

    before = finished(out)
    assert 2 <= len(before) < 6  # the kill may land while a third result is being written, never half-written
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) - 1 in (2, 3)

    # What the resume reads is the files: the second run needs no process of its own.
    resumed = CliRunner().invoke(app, [*command[3:], "--cache-dir", str(cache_dir)])
    assert resumed.exit_code == 0, resumed.output
    assert f"{6 - len(before)} cell(s) to run, {len(before)} already done" in resumed.output
    after = finished(out)
    assert len(after) == 6
    assert all(after[cell_id] == started for cell_id, started in before.items())  # nothing redone
    assert len((out / "results.csv").read_text().splitlines()) == 7
    assert not list((out / "cells").glob(".*.tmp"))
