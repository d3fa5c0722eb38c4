"""The results directory: atomic writes, the lock, results.csv rebuilt from the cell files."""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lossbench.errors import ResultsLockedError, ResultsWriteError
from lossbench.record import CellRecord, Environment, Epoch, Metrics, Status, Timings
from lossbench.atomic_write import atomic_write_text
from lossbench.results_csv import CSV_COLUMNS
from lossbench.store import ResultsStore


def record(cell_id: str, status: Status = "done", acc: float | None = 0.5, seed: int = 0) -> CellRecord:
    return CellRecord(
        id=cell_id, label=f"cell {cell_id}", seed=seed, status=status,
        axes={"loss": "cross_entropy", "regularizer": "none", "augmentation": "none", "optimizer": "sgd"},
        config={"train": {"epochs": 3}},
        metrics=Metrics() if acc is None else Metrics(test_acc=acc, test_nll=1.0, ece=0.1, train_acc=0.9, gap=0.4),
        timing=Timings(train_time_s=2.0, img_per_s=100.0, epochs_run=3, peak_mem_mb=10.0),
        history=[Epoch(epoch=3)], env=Environment(device="cpu"),
        error=None if status == "done" else "ValueError: boom\nmore",
    )


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.json"
    atomic_write_text(path, "old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ResultsWriteError, match="cannot write .*a.json: No space left on device") as caught:
        atomic_write_text(path, "new")
    assert "the disk is full" in caught.value.render()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind


def test_write_and_read_cells_and_csv(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r")
    store.write_cell(record("b", acc=0.7, seed=1))
    store.write_cell(record("a", acc=0.6))
    store.write_cell(record("c", status="failed", acc=None))
    assert store.read_cell("a").metrics.test_acc == 0.6
    assert _final_ids(store) == {"a", "b"}
    with open(store.rebuild_csv()) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_COLUMNS
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[2]["status"] == "failed" and rows[2]["test_acc"] == "" and rows[2]["error"] == "ValueError: boom"


def test_unreadable_cell_file_is_not_trusted(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_cell(record("a"))
    store.cell_path("b").write_text('{"id": "b", "status": "do')  # a torn file from some other tool
    assert store.read_cell("b") is None
    assert _final_ids(store) == {"a"}


def test_lock_excludes_a_second_run(tmp_path: Path) -> None:
    with ResultsStore(tmp_path):
        with pytest.raises(ResultsLockedError) as info:
            ResultsStore(tmp_path).acquire_lock()
        assert "in use by lossbench pid" in info.value.render()
    with ResultsStore(tmp_path):  # released on exit
        pass


def test_lock_probe_sees_a_holder_and_takes_nothing(tmp_path: Path) -> None:
    ResultsStore(tmp_path).check_not_locked()  # no lock file yet
    assert not (tmp_path / ".lock").exists()
    with ResultsStore(tmp_path):
        with pytest.raises(ResultsLockedError) as info:
            ResultsStore(tmp_path).check_not_locked()
        assert "in use by lossbench pid" in info.value.render()
    ResultsStore(tmp_path).check_not_locked()  # released
    with ResultsStore(tmp_path):  # and the probe left nothing held
        pass


def test_lock_is_freed_when_its_process_dies(tmp_path: Path) -> None:
    code = f"from lossbench.store import ResultsStore; ResultsStore({str(tmp_path)!r}).acquire_lock(); import os; os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True)
    with ResultsStore(tmp_path):
        pass


def test_cell_json_round_trips(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    rec = record("x")
    store.write_cell(rec)
    assert json.loads(store.cell_path("x").read_text()) == rec.to_dict()
    assert store.read_cell("x") == rec


def test_stale_temp_files_are_removed_by_the_next_lock_holder(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    with store:
        store.write_cell(record("a"))
    stale = store.cells_dir / ".b.json.abc123.tmp"
    stale.write_text('{"id": "b"')  # what a writer killed mid-write leaves
    with store:
        assert not stale.exists()
    assert _final_ids(store) == {"a"}


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    atomic_write_text(path, "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_results_id_of_a_directory_without_its_marker_file(tmp_path):
    """A directory whose marker file is missing gets a new marker holding the usual text and its id."""
    from lossbench.store import MARKER, MARKER_TEXT, results_id

    first = results_id(tmp_path)
    assert len(first) == 12 and int(first, 16) >= 0
    text = (tmp_path / MARKER).read_text(encoding="utf-8")
    assert text.startswith(MARKER_TEXT) and text.endswith(f"id: {first}\n")
    assert results_id(tmp_path) == first


def test_results_csv_names_the_values_tuning_chose(tmp_path):
    """A tuned cell's optimizer column keeps the suite's recipe label; the tuned column says what it trained with."""
    from lossbench.results_csv import csv_row

    tuned = {"params": {"train.optimizer.lr": 0.123456789, "train.batch_size": 64}, "trial": 3}
    record = CellRecord(id="a" * 12, label="focal | none | none", seed=0, status="done",
                        axes={"loss": "focal", "optimizer": "sgd(lr=0.03)"}, config={"tuned": tuned})
    assert csv_row(record)["tuned"] == "train.optimizer.lr=0.123457; train.batch_size=64"
    assert csv_row(record)["optimizer"] == "sgd(lr=0.03)"
    record.config = {}
    assert csv_row(record)["tuned"] is None


def _final_ids(store: ResultsStore) -> set[str]:
    """Ids of the cells whose result is final (done or diverged): the ones a rerun skips."""
    return {r.id for r in store.records() if r.is_final}
