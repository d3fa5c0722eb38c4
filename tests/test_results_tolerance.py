"""A results directory may hold anything: cell files of the wrong shape or type are warned about, ignored and their
cells retrained; stray files never become CSV rows; `report` still works."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from lossbench.cli import app

SEVEN_SEEDS = """\
name: tolerant
dataset: {name: digits, train_subset: 150, test_subset: 100}
model: {name: small_cnn}
train: {epochs: 1, batch_size: 64, optimizer: {name: adam, lr: 0.003}, device: cpu}
seeds: [0, 1, 2, 3, 4, 5, 6]
grid:
  loss: [cross_entropy]
"""


def run(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_wrong_shaped_cell_files_are_warned_about_ignored_and_retrained(tmp_path: Path, cache_dir: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SEVEN_SEEDS)
    out = tmp_path / "results"
    first = run("run", suite, "--out", out, "--cache-dir", cache_dir, "--plain", "--no-report")
    assert first.exit_code == 0, first.output
    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == 7
    good = json.loads(cells[0].read_text())
    # Valid JSON of every wrong shape, each in place of a real cell's file.
    bad_shapes: list[Any] = [
        [],
        42,
        {"status": "done"},
        {**good, "seed": "zero"},
        {**good, "metrics": "oops"},
        {**good, "label": None},
        {**good, "id": "someone-else"},
    ]
    for path, shape in zip(cells, bad_shapes):
        path.write_text(json.dumps(shape))
    # Strays: a foreign JSON that is not named like any cell, and a non-JSON file.
    (out / "cells" / "foreign.json").write_text('{"foo": 1}')
    (out / "cells" / "notes.txt").write_text("my notes")

    again = run("run", suite, "--out", out, "--cache-dir", cache_dir, "--plain", "--no-report")
    assert again.exit_code == 0, again.output
    text = " ".join(again.output.split())
    assert "ran 7, skipped 0" in text
    for path in cells:
        assert f"ignored {path.name}" in text, path.name
    assert "ignored foreign.json" in text
    assert "Traceback" not in text
    for path in cells:
        record = json.loads(path.read_text())
        assert record["status"] == "done" and record["id"] == path.stem
    # results.csv: one row per real cell, none for the strays.
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["id"] for r in rows) == sorted(p.stem for p in cells)
    assert (out / "cells" / "foreign.json").read_text() == '{"foo": 1}'  # not ours: left as it was
    report = run("report", out)
    assert report.exit_code == 0, report.output


def test_report_on_a_directory_with_wrong_shaped_files_reports_the_rest(tmp_path: Path, cache_dir: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SEVEN_SEEDS.replace("[0, 1, 2, 3, 4, 5, 6]", "[0, 1]"))
    out = tmp_path / "results"
    assert run("run", suite, "--out", out, "--cache-dir", cache_dir, "--no-report").exit_code == 0
    good = json.loads(next((out / "cells").glob("*.json")).read_text())
    for name, shape in {"a": [], "b": 42, "c": {"status": "done"}, "d": {**good, "id": "d", "seed": "zero"},
                        "e": {**good, "id": "e", "metrics": "oops"}, "f": {**good, "id": "f", "label": None},
                        "g": {"foo": 1}}.items():
        (out / "cells" / f"{name}.json").write_text(json.dumps(shape))
    (out / "cells" / "h.json").mkdir()
    result = run("report", out)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert (out / "report.md").is_file()


def test_a_directory_named_like_a_cell_file_stops_the_run_before_training(tmp_path: Path, cache_dir: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SEVEN_SEEDS.replace("[0, 1, 2, 3, 4, 5, 6]", "[0]"))
    out = tmp_path / "results"
    assert run("run", suite, "--out", out, "--cache-dir", cache_dir, "--no-report").exit_code == 0
    (cell,) = list((out / "cells").glob("*.json"))
    cell.unlink()
    cell.mkdir()
    (cell / "keep.txt").write_text("mine")
    result = run("run", suite, "--out", out, "--cache-dir", cache_dir, "--plain")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"{cell.name} is a directory" in text and "Traceback" not in text
    assert "[1/1]" not in text  # nothing trained
    assert (cell / "keep.txt").read_text() == "mine"
