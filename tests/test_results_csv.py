"""results.csv kept incrementally: rows appended per cell, a sorted atomic rewrite at most every few seconds and at
the end, the directory read once per run; SIGKILL at any point leaves a CSV that parses and matches the cells."""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from lossbench.execution import Executor
from lossbench.record import CellRecord, Metrics, Timings
from lossbench.results_csv import CSV_COLUMNS, ResultsCsv, csv_row, csv_text
from lossbench.store import ResultsStore
from test_store import record

MANY_CELLS = """\
name: many
dataset: {name: digits, train_subset: 20}
model: {name: small_cnn}
train: {epochs: 1, device: cpu}
seeds: [%s]
grid:
  loss: [cross_entropy, mse]
"""


def parse(path: Path) -> list[dict[str, str]]:
    """The rows of a results.csv, checking that it is one well-formed table with the right header."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    assert header == CSV_COLUMNS
    rows = list(reader)
    assert all(len(row) == len(CSV_COLUMNS) for row in rows)
    return [dict(zip(header, row)) for row in rows]


def as_csv(rec: CellRecord) -> dict[str, str]:
    """A record's row as results.csv spells it (every value a string)."""
    return next(csv.DictReader(io.StringIO(csv_text([csv_row(rec)]))))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rows_are_appended_and_a_changed_row_waits_for_the_next_rewrite(tmp_path: Path) -> None:
    path, clock = tmp_path / "results.csv", FakeClock()
    table = ResultsCsv(path, {"b": csv_row(record("b", status="failed", acc=None))}, min_interval_s=5.0,
                       clock=clock)
    table.rewrite()
    written = path.stat().st_ino
    table.put(csv_row(record("a", acc=0.6)))
    assert path.stat().st_ino == written  # appended, not rewritten
    assert [r["id"] for r in parse(path)] == ["b", "a"]
    table.put(csv_row(record("b", acc=0.7)))  # the failed cell trained again: its row changes
    assert [(r["id"], r["status"]) for r in parse(path)] == [("b", "failed"), ("a", "done")]  # the old version
    clock.now = 5.0
    table.put(csv_row(record("c", acc=0.1)))  # the changed row has waited long enough: one sorted rewrite
    assert [(r["id"], r["status"]) for r in parse(path)] == [("a", "done"), ("b", "done"), ("c", "done")]
    table.put(csv_row(record("0", acc=0.2)))
    table.close()
    assert [r["id"] for r in parse(path)] == ["0", "a", "b", "c"]  # sorted by label at the end
    assert parse(path)[2] == as_csv(record("b", acc=0.7))


def test_a_run_reads_each_cell_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lossbench import runner, store as store_module
    from lossbench.suite import load_suite

    suite_path = tmp_path / "suite.yaml"
    suite_path.write_text(MANY_CELLS % "0, 1, 2")
    suite, out = load_suite(suite_path), tmp_path / "out"
    runner.run(runner.plan(suite, out), executor=SyntheticExecutor(first_run=False))  # a complete directory
    (out / "cells" / "stray.txt").write_text("not a cell")
    reads: list[str] = []
    real = store_module.read_cell_file
    monkeypatch.setattr(store_module, "read_cell_file", lambda p: (reads.append(p.name), real(p))[1])
    resumed = runner.plan(suite, out)
    summary = runner.run(resumed)
    assert sorted(reads) == sorted(p.name for p in (out / "cells").iterdir())  # each file once, in plan()
    assert resumed.pending == [] and summary.skipped == 6 and len(summary.records) == 6
    assert [p.name for p, _ in resumed.ignored] == ["stray.txt"]
    assert {r["id"] for r in parse(out / "results.csv")} == {c.id for c in resumed.cells}


def _done(cell, job) -> CellRecord:
    """A finished record of `cell` made without training (the bookkeeping is what is tested)."""
    from lossbench.execution import failed_record

    rec = failed_record(cell, job, "", "")
    rec.status, rec.error, rec.traceback = "done", None, None
    rec.metrics = Metrics(test_acc=(cell.seed % 10) / 10, test_nll=1.0, ece=0.1)
    rec.timing = Timings(train_time_s=0.001, epochs_run=1)
    return rec


class SyntheticExecutor(Executor):
    """Hands back a record per cell at once; on the first run every 7th seed fails (the next run retrains it)."""

    def __init__(self, first_run: bool):
        self.first_run = first_run

    def run(self, cells, job, on_start, on_event, on_result) -> None:
        from lossbench.execution import failed_record

        for cell in cells:
            on_start(cell)
            failing = self.first_run and cell.seed % 7 == 0
            on_result(cell, failed_record(cell, job, "ValueError: boom", "") if failing else _done(cell, job))


def _kill_self_after(cells_dir: Path, written: int, seed: int) -> None:
    """In the child: a thread that SIGKILLs this process once `written` cell files exist. It counts from inside
    the process, so a loaded machine cannot let the run get far past the point before the kill lands: the thread
    runs every few milliseconds of the run's own CPU time (the interpreter's switch interval)."""
    rng = random.Random(seed)

    def watch() -> None:
        while (len(os.listdir(cells_dir)) if cells_dir.is_dir() else 0) < written:
            time.sleep(0.0005 * rng.random())
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def _run_in_child(suite_path: Path, out: Path, first_run: bool, kill_at: int | None = None) -> int:
    """Fork a process that runs the suite with SyntheticExecutor, SIGKILLed by itself once `kill_at` cell files
    exist (when given); returns its pid."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            from lossbench import runner
            from lossbench.suite import load_suite

            if kill_at is not None:
                _kill_self_after(out / "cells", kill_at, seed=kill_at)
            # Rewrite the CSV often, so that kills also land in and around the rewrites.
            ResultsCsv.__init__.__kwdefaults__["min_interval_s"] = 0.02
            runner.run(runner.plan(load_suite(suite_path), out), executor=SyntheticExecutor(first_run))
            code = 0
        finally:
            os._exit(code)
    return pid


def test_sigkill_at_random_points_never_leaves_a_bad_results_csv(tmp_path: Path) -> None:
    seeds = 150
    suite_path = tmp_path / "suite.yaml"
    suite_path.write_text(MANY_CELLS % ", ".join(map(str, range(seeds))))
    out, cells_dir, total = tmp_path / "out", tmp_path / "out" / "cells", 2 * seeds
    rng = random.Random(21)
    kills = 0
    for attempt in range(6):
        done_before = len(os.listdir(cells_dir)) if cells_dir.is_dir() else 0
        if done_before >= total - 10:
            break
        # Killed once the run has written `target` cell files: a random point of the run, whatever the speed.
        target = rng.randrange(done_before + 1, total)
        pid = _run_in_child(suite_path, out, first_run=attempt == 0, kill_at=target)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            kills += 1
        files = {p.stem: p for p in cells_dir.glob("*.json")}
        if (out / "results.csv").exists():
            rows = parse(out / "results.csv")
            assert len({r["id"] for r in rows}) == len(rows)  # no cell twice
            for row in rows:  # every row is a cell file's current row, or the one it replaced (a failed cell's)
                assert row["id"] in files
                current = as_csv(ResultsStore(out).read_cell(row["id"]))
                assert row == current or row["status"] == "failed"
    assert kills >= 3
    pid = _run_in_child(suite_path, out, first_run=False)  # the next run, left to finish
    assert os.waitpid(pid, 0)[1] == 0
    records = list(ResultsStore(out).records())
    assert len(records) == total and all(r.status == "done" for r in records)
    expected = sorted((as_csv(r) for r in records), key=lambda r: (r["label"], int(r["seed"])))
    assert parse(out / "results.csv") == expected
