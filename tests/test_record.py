"""The typed cell record: what the runner writes and every reader reads; compatibility with files on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lossbench.axes import AXIS_NAMES
from lossbench.cli import app
from lossbench.errors import RecordError, RecordSchemaError
from lossbench.record import (
    FINAL_STATUSES, SCHEMA_VERSION, STATUSES, CellRecord, Epoch, Metrics, ShiftBlock, Timings,
)
from lossbench.results_csv import csv_row
from lossbench.store import ResultsStore

from conftest import REPO

EXAMPLE = REPO / "results" / "smoke-digits-3seeds"


def test_the_committed_example_loads_and_round_trips_unchanged() -> None:
    files = sorted((EXAMPLE / "cells").glob("*.json"))
    assert len(files) == 24
    for path in files:
        raw = json.loads(path.read_text(encoding="utf-8"))
        record = CellRecord.from_dict(raw)
        written = record.to_dict()
        assert {k: written[k] for k in raw} == raw  # nothing lost or changed; fields added since get defaults
        assert all(written[k] in ({}, [], None) for k in set(written) - set(raw))
        assert record.status in STATUSES and set(record.axes) <= set(AXIS_NAMES)
        confusion = np.array(record.metrics.confusion)
        assert record.value("test_acc") == np.trace(confusion) / confusion.sum()
    assert len(list(ResultsStore(EXAMPLE).records())) == 24


def test_report_of_the_committed_example_works(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(EXAMPLE), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "Leaderboard" in (tmp_path / "r" / "report.md").read_text(encoding="utf-8")


def _example_record() -> dict:
    return json.loads(next(iter(sorted((EXAMPLE / "cells").glob("*.json")))).read_text(encoding="utf-8"))


def test_a_newer_schema_is_a_clear_error_everywhere(tmp_path: Path) -> None:
    raw = _example_record()
    raw["schema"] = SCHEMA_VERSION + 1
    with pytest.raises(RecordSchemaError, match="newer lossbench"):
        CellRecord.from_dict(raw)
    out = tmp_path / "res"
    (out / "cells").mkdir(parents=True)
    path = out / "cells" / f"{raw['id']}.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(RecordSchemaError, match=f"schema {SCHEMA_VERSION + 1}"):
        ResultsStore(out).read_cell(raw["id"])  # never treated as absent and overwritten by a rerun
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 2
    assert "newer lossbench" in result.output and path.name in result.output and "upgrade" in result.output
    assert json.loads(path.read_text(encoding="utf-8")) == raw  # untouched


def test_unknown_keys_survive_a_rewrite_and_old_files_get_defaults(tmp_path: Path) -> None:
    raw = _example_record()
    raw["written_by_a_plugin"] = {"x": 1}
    del raw["precision"], raw["notes"]
    record = CellRecord.from_dict(raw)
    assert record.precision is None and record.notes == []
    store = ResultsStore(tmp_path)
    store.write_cell(record)
    again = store.read_cell(record.id)
    assert again is not None and again.extra == {"written_by_a_plugin": {"x": 1}}
    assert again.to_dict()["written_by_a_plugin"] == {"x": 1}


@pytest.mark.parametrize("broken", [[], {"id": "a"}, {"id": "a", "label": "l", "seed": 0, "status": "odd", "axes": {}},
                                    {"id": "a", "label": "l", "seed": "0", "status": "done", "axes": {}}])
def test_files_that_are_not_records_are_record_errors(broken: object) -> None:
    with pytest.raises(RecordError, match="not a lossbench cell result"):
        CellRecord.from_dict(broken)


def test_derived_values_and_csv_row() -> None:
    record = CellRecord.from_dict(_example_record())
    row = csv_row(record)
    assert row["test_acc"] == record.metrics.test_acc and row["device"] == record.env.device
    assert row["epochs"] == record.config["train"]["epochs"] and row["scenario"] == "none"
    assert record.is_final == (record.status in FINAL_STATUSES)


def test_every_cell_of_a_fresh_smoke_run_has_test_acc_equal_to_the_confusion_trace(tmp_path: Path,
                                                                                     cache_dir: Path) -> None:
    """The smoke suite (2 epochs instead of 12, to stay fast) run through the real CLI."""
    suite = tmp_path / "smoke.yaml"
    shutil.copy(REPO / "suites" / "smoke.yaml", suite)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(out), "--epochs", "2", "--plain",
                                      "--no-report", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    files = sorted((out / "cells").glob("*.json"))
    assert len(files) == 8
    for path in files:
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert raw["schema"] == SCHEMA_VERSION and raw["status"] == "done"
        confusion = np.array(raw["metrics"]["confusion"])
        assert raw["metrics"]["test_acc"] == np.trace(confusion) / confusion.sum()
        assert raw["history"][-1]["test_acc"] == raw["metrics"]["test_acc"]


def test_a_rewritten_file_has_the_same_bytes(tmp_path: Path) -> None:
    """Every committed cell file, read and written back by the store, is byte for byte the file it was: the blocks
    keep their keys' order, their unknown keys and their nulls."""
    store = ResultsStore(tmp_path)
    for path in sorted((EXAMPLE / "cells").glob("*.json")):
        record = CellRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
        store.write_cell(record)
        assert store.cell_path(record.id).read_bytes() == path.read_bytes(), path.name


def test_blocks_keep_order_unknown_keys_and_nulls_and_add_keys_as_a_dict_would() -> None:
    raw = _example_record()
    metrics = {k: v for k, v in raw["metrics"].items() if k != "ece"}
    raw["metrics"] = {"written_by_a_plugin": [1], **metrics, "ece": None, "scenario": {"noise_rate": 0.2, "new_key": 1}}
    raw["timing"] = dict(reversed(list(raw["timing"].items())))
    raw["history"] = [{"lr": 0.1, "epoch": 1, "unknown": "x"}]
    record = CellRecord.from_dict(raw)
    assert record.metrics.extra == {"written_by_a_plugin": [1]} and record.metrics.ece is None
    assert record.noise_rate == 0.2 and record.history[0].extra == {"unknown": "x"}
    assert json.dumps(record.to_dict()) == json.dumps(raw)
    record.timing.resumed_after_epoch = 3
    record.metrics.set("plugin_score", 0.5)
    raw["timing"]["resumed_after_epoch"] = 3
    raw["metrics"]["plugin_score"] = 0.5
    assert json.dumps(record.to_dict()) == json.dumps(raw)


def test_blocks_built_from_fields_hold_what_was_given() -> None:
    assert Metrics(test_acc=0.5, ece=0.1).to_dict() == {"test_acc": 0.5, "ece": 0.1}
    assert not Metrics() and Metrics(test_acc=0.0)
    assert tuple(Epoch(epoch=1, lr=0.1).to_dict()) == Epoch.field_names()  # a history entry lists every measure
    assert Timings(epochs_run=2, train_time_s=3.0, epoch_eval_s=1.0).epoch_seconds() == 2.0
    assert Timings(epochs_run=2, train_time_s=3.0).epoch_seconds() == 1.5  # files from before per-epoch evaluation


def test_value_reads_metrics_then_the_last_epoch_then_timings() -> None:
    record = CellRecord("a", "a", 0, "done", {}, metrics=Metrics(test_acc=0.75),
                        history=[Epoch(epoch=1, val_acc=0.5), Epoch(epoch=2, val_acc=0.625)],
                        timing=Timings(train_time_s=4.0, epochs_run=2, epoch_eval_s=2.0, final_eval_s=1.0))
    assert record.value("test_acc") == 0.75 and record.value("val_acc") == 0.625
    assert record.value("train_time_s") == 4.0 and record.value("epoch_s") == 3.0
    assert record.value("final_eval_s") is None and record.value("ece") is None  # not a metric's name


def test_a_shift_block_reads_into_scores_and_writes_back_the_same() -> None:
    raw = {"clean": {"acc": 0.9, "nll": 0.3, "ece": 0.02},
           "corruptions": {"contrast": {"1": {"acc": 0.8, "nll": 0.5, "ece": 0.03, "from_a_plugin": 1}}},
           "ood": {"blank": {"auroc_msp": 0.9, "fpr95_msp": 0.2, "auroc_energy": 0.95, "fpr95_energy": 0.1,
                             "images": 10}},
           "evaluations": [{"corruptions": ["contrast"], "severities": [1], "ood": ["blank"],
                            "checkpoint_sha256": None, "seconds": 1.5, "at": "2026-01-01T10:00:00+00:00"}],
           "checkpoint_sha256": None}
    metrics = Metrics.from_dict({"test_acc": 0.9, "shift": raw})
    shift = metrics.shift
    assert isinstance(shift, ShiftBlock) and shift.corruptions["contrast"]["1"].acc == 0.8
    assert shift.ood["blank"].images == 10 and shift.evaluations[0].severities == [1]
    assert json.dumps(metrics.to_dict()) == json.dumps({"test_acc": 0.9, "shift": raw})
    later = Metrics(test_acc=0.9)
    later.update({"shift": raw, "corrupt_acc": 0.8})  # what `lossbench evaluate` adds to a record
    assert isinstance(later.shift, ShiftBlock) and later.to_dict() == {"test_acc": 0.9, "shift": raw,
                                                                       "corrupt_acc": 0.8}
    damaged = Metrics.from_dict({"shift": "not an object"})
    assert damaged.shift == "not an object" and damaged.to_dict() == {"shift": "not an object"}
