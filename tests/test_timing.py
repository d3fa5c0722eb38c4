"""Time that adds up: each cell splits its wall time into training, evaluation and overhead; a run records where
its own wall time went; `train.eval_every` evaluates every N epochs and after the last, without changing results."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lossbench import execution, run_clock, runner
from lossbench.record import CellRecord, Timings
from lossbench.suite import load_suite
from lossbench.report import write_report
from lossbench.store import read_runs

from conftest import TINY_SUITE

EVERY_2 = TINY_SUITE.replace("  epochs: 2\n", "  epochs: 5\n  eval_every: 2\n").replace(
    "loss: [cross_entropy, mse]", "loss: [cross_entropy]")


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]


def test_cell_times_add_up_to_the_run_wall_time(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "out"
    plan = runner.plan(load_suite(write_suite()), out, cache_dir=cache_dir)
    t0 = time.perf_counter()
    runner.run(plan)
    wall = time.perf_counter() - t0
    records = _records(out)
    assert len(records) == 4
    for r in records:
        t, history = r["timing"], r["history"]
        # The parts of a cell are disjoint and make up its wall time exactly.
        assert t["cell_s"] == pytest.approx(t["train_time_s"] + t["eval_time_s"] + t["overhead_s"])
        assert t["eval_time_s"] == pytest.approx(t["epoch_eval_s"] + t["final_eval_s"])
        assert t["epoch_eval_s"] == pytest.approx(sum(h["eval_s"] for h in history))
        assert t["train_time_s"] == pytest.approx(sum(h["train_s"] for h in history))
        assert all(h["eval_s"] > 0 and h["epoch_s"] >= h["train_s"] + h["eval_s"] for h in history)
        assert t["overhead_s"] >= 0 and t["final_eval_s"] > 0
    [entry] = read_runs(out)
    cells = sum(r["timing"]["cell_s"] for r in records)
    assert entry["cells"] == 4 and entry["cells_s"] == pytest.approx(cells)
    # Measured from outside, the run's wall time is the cells plus what the run records besides them, and that
    # remainder (loading data, writing files, everything else) is all the run leaves unexplained.
    assert entry["startup_s"] == 0  # a library call: the caller did not say how long its process ran before
    recorded = entry["cells_s"] + entry["data_s"] + entry["write_s"] + entry["other_s"]
    assert recorded == pytest.approx(entry["wall_s"])
    assert entry["wall_s"] <= wall
    assert wall - cells <= entry["data_s"] + entry["write_s"] + entry["other_s"] + (wall - entry["wall_s"]) + 1e-6
    # Each recorded part is a measured span, none negative (how large each is depends on the machine's load, so
    # no share of the wall time is asserted).
    assert min(entry["data_s"], entry["write_s"], entry["other_s"], cells) >= 0

    report = (out / "report.md")
    write_report([out])
    text = report.read_text()
    compute = next(line for line in text.splitlines() if line.startswith("| compute |"))
    assert f"{cells:,.1f} s summed over 4 cell file(s)" in compute
    assert "| wall time | latest run" in text and f"{entry['wall_s']:,.1f} s for 4 cell file(s)" in text


def test_eval_every_evaluates_every_n_epochs_and_the_last(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    every = tmp_path / "every2"
    runner.run(runner.plan(load_suite(write_suite(EVERY_2, "every.yaml")), every, cache_dir=cache_dir))
    each = tmp_path / "every1"
    runner.run(runner.plan(load_suite(write_suite(EVERY_2.replace("  eval_every: 2\n", ""), "each.yaml")), each,
                           cache_dir=cache_dir))
    for a, b in zip(_records(every), _records(each)):
        assert a["id"] == b["id"]  # how often a cell is measured is not what it is
        evaluated = [h["epoch"] for h in a["history"] if h["test_acc"] is not None]
        assert evaluated == [2, 4, 5]
        assert all(h["eval_s"] == 0 for h in a["history"] if h["epoch"] not in evaluated)
        # Evaluation takes no part in training: same losses, same final metrics as evaluating every epoch.
        assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
        assert a["metrics"]["test_acc"] == b["metrics"]["test_acc"]
        assert a["metrics"]["confusion"] == b["metrics"]["confusion"]
        assert [h["test_acc"] for h in b["history"] if h["epoch"] in evaluated] == [
            h["test_acc"] for h in a["history"] if h["epoch"] in evaluated]
    # The report's curves and progress survive epochs without a test evaluation.
    files = write_report([every])
    assert any(str(f).endswith("learning_curves.png") for f in files)


def test_eval_every_is_validated(write_suite) -> None:
    from lossbench.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_suite(write_suite(EVERY_2.replace("eval_every: 2", "eval_every: 0")))
    text = info.value.render()
    assert "suite.yaml:9:3 at train.eval_every: must be > 0 (got 0)" in text, text
    assert load_suite(write_suite(EVERY_2)).train.eval_every == 2


def test_results_csv_has_parameters_load_and_times(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    import csv

    out = tmp_path / "out"
    runner.run(runner.plan(load_suite(write_suite()), out, cache_dir=cache_dir))
    rows = list(csv.DictReader((out / "results.csv").open()))
    by_id = {r["id"]: r for r in rows}
    for record in _records(out):
        row = by_id[record["id"]]
        assert int(row["model_params"]) == record["metrics"]["model_params"] > 0
        assert int(row["loss_params"]) == record["metrics"]["loss_params"] == 0  # cross_entropy and mse have none
        assert float(row["cell_s"]) == pytest.approx(record["timing"]["cell_s"])
        assert float(row["eval_time_s"]) == pytest.approx(record["timing"]["eval_time_s"])
        assert int(row["cores"]) == record["load"]["cores"]
        assert row["start_load_1m"] == "" or float(row["start_load_1m"]) == pytest.approx(
            record["load"]["start_load_1m"])


def test_pack_cells_share_their_wall_time() -> None:
    """Two packed cells: the pack's 4 s of training and its overhead are shared, each keeps its own evaluation,
    and their cell_s add up to the pack's 10 s of wall time."""
    records = [CellRecord("a", "a", 0, "done", {}, timing=Timings(train_time_s=4.0, eval_time_s=1.0)),
               CellRecord("b", "b", 0, "done", {}, timing=Timings(train_time_s=4.0, eval_time_s=2.0))]
    shared = 10.0 - 3.0  # the pack's wall time less both evaluations
    for r in records:
        execution.add_wall_time(r, shared + r.timing.eval_time_s, pack_size=2)
    assert [r.timing.overhead_s for r in records] == [1.5, 1.5]  # (7 − 4) / 2
    assert [r.timing.cell_s for r in records] == [4.5, 5.5]
    assert sum(r.timing.cell_s for r in records) == 10.0


def test_process_age_is_the_time_since_the_process_started() -> None:
    age = run_clock.process_age_s()
    time.sleep(0.2)
    assert run_clock.process_age_s() >= age + 0.15 and age > 0
