"""lossbench never touches what is not its own: another program's directory is refused, nothing is written before
the suite and the data check out, and a read-only or full disk is a clear error that leaves earlier results whole."""

from __future__ import annotations

import errno
import json
import os
import tarfile
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import lossbench.atomic_write
import lossbench.store
from lossbench.cli import app
from lossbench.errors import ForeignDirectoryError
from lossbench.store import MARKER, ResultsStore, check_results_dir

ONE_CELL = """\
name: one
dataset: {name: digits, train_subset: 200, test_subset: 100}
model: {name: small_cnn}
train: {epochs: 1, batch_size: 64, optimizer: {name: adam, lr: 0.003}, device: cpu}
seeds: [0]
grid:
  loss: [cross_entropy]
"""
TWO_CELLS = ONE_CELL.replace("loss: [cross_entropy]", "loss: [cross_entropy, mse]")


def run(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_another_programs_directory_is_refused_and_left_as_it_was(tmp_path: Path, cache_dir: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "results.csv").write_text("run,score\n1,0.5\n")
    (theirs / "report.md").write_text("# my own report\n")
    (theirs / "suite.yaml").write_text("tests: [a, b]\n")
    before = snapshot(theirs)
    suite = tmp_path / "suite.yaml"
    suite.write_text(ONE_CELL)
    result = run("run", suite, "--out", theirs, "--cache-dir", cache_dir)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "is not a lossbench results directory (it holds report.md, results.csv, suite.yaml)" in text
    assert "Traceback" not in text
    assert snapshot(theirs) == before
    assert sorted(p.name for p in theirs.iterdir()) == ["report.md", "results.csv", "suite.yaml"]


def test_a_file_given_as_out_is_refused(tmp_path: Path, cache_dir: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    suite = tmp_path / "suite.yaml"
    suite.write_text(ONE_CELL)
    result = run("run", suite, "--out", target, "--cache-dir", cache_dir)
    assert result.exit_code == 2 and "is a file, not a directory" in result.output
    assert target.read_text() == "mine"


def test_new_empty_and_own_directories_are_accepted_and_marked(tmp_path: Path, cache_dir: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(ONE_CELL)
    empty = tmp_path / "empty"
    empty.mkdir()
    first = run("run", suite, "--out", empty, "--cache-dir", cache_dir, "--no-report", "--plain")
    assert first.exit_code == 0, first.output
    assert (empty / MARKER).is_file()
    # A results directory written before the marker existed (cells/*.json + suite.yaml) is still lossbench's:
    # it keeps working, and gets the marker.
    (empty / MARKER).unlink()
    again = run("run", suite, "--out", empty, "--cache-dir", cache_dir, "--no-report", "--plain")
    assert again.exit_code == 0, again.output
    assert "skipped 1" in again.output
    assert (empty / MARKER).is_file()


def test_the_committed_example_results_count_as_lossbench_results(tmp_path: Path) -> None:
    import shutil

    from conftest import REPO

    example = tmp_path / "example"
    shutil.copytree(REPO / "results" / "smoke-digits-3seeds", example)
    (example / MARKER).unlink(missing_ok=True)
    check_results_dir(example)  # no error
    with ResultsStore(example):
        pass
    assert (example / MARKER).is_file()
    result = run("report", example)
    assert result.exit_code == 0, result.output


def test_a_lookalike_without_cell_files_is_not_lossbench_s(tmp_path: Path) -> None:
    lookalike = tmp_path / "lookalike"
    (lookalike / "cells").mkdir(parents=True)
    (lookalike / "suite.yaml").write_text("name: x\ngrid: {}\n")
    (lookalike / "cells" / "notes.txt").write_text("not a cell")
    with pytest.raises(ForeignDirectoryError):
        check_results_dir(lookalike)


def _folder(root: Path, bad: str | None = None) -> Path:
    """A two-class image folder with train/ and test/ of 8×8 PNGs; `bad` replaces one image with garbage bytes."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("a", "b"):
            d = root / split / label
            d.mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{i}.png")
    if bad is not None:
        (root / bad).write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return root


def _truncated_tar(tmp_path: Path) -> Path:
    folder = _folder(tmp_path / "src")
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / "train", arcname="train")
        tar.add(folder / "test", arcname="test")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    return archive


@pytest.mark.parametrize("case", ["test_subset larger than the split", "undecodable image", "truncated tar"])
def test_data_errors_fail_before_anything_is_written(tmp_path: Path, cache_dir: Path, case: str) -> None:
    if case == "test_subset larger than the split":
        text = ONE_CELL.replace("test_subset: 100", "test_subset: 5000")
    else:
        root = _folder(tmp_path / "folder", bad="train/a/3.png") if case == "undecodable image" else \
            _truncated_tar(tmp_path)
        text = ONE_CELL.replace("{name: digits, train_subset: 200, test_subset: 100}",
                                f"{{name: image_folder, root: '{root}'}}")
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    out = tmp_path / "results"
    result = run("run", suite, "--out", out, "--cache-dir", tmp_path / "cache", "--plain")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "object at 0x" not in result.output
    assert not out.exists()  # no lock, no results.csv, no suite.yaml


class _DiskFullAt:
    """Stands in for the store's `tempfile`: the n-th temp file written under `under` is /dev/full, where every
    write fails with ENOSPC (the real kernel error of a full disk)."""

    def __init__(self, under: str, nth: int):
        self.under, self.nth, self.seen = under, nth, 0

    def mkstemp(self, dir: Path, prefix: str, suffix: str) -> tuple[int, str]:
        fd, path = tempfile.mkstemp(dir=dir, prefix=prefix, suffix=suffix)
        if self.under in f"{Path(dir).name}/{prefix}":
            self.seen += 1
            if self.seen == self.nth:
                os.close(fd)
                return os.open("/dev/full", os.O_WRONLY), path
        return fd, path


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to simulate a full disk")
def test_a_full_disk_mid_run_stops_cleanly_with_earlier_results_intact(tmp_path: Path, cache_dir: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(TWO_CELLS)
    out = tmp_path / "results"
    monkeypatch.setattr(lossbench.atomic_write, "tempfile", _DiskFullAt("cells/", nth=2))
    result = run("run", suite, "--out", out, "--cache-dir", cache_dir, "--plain")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "No space left on device" in text and "the disk is full" in text
    assert "ended done with test accuracy" in text and "could not be saved" in text
    assert "Traceback" not in text
    (saved,) = list((out / "cells").glob("*.json"))
    assert json.loads(saved.read_text())["status"] == "done"
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and json.loads(saved.read_text())["id"] in rows[1]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    # The next run, with space again, trains only the cell whose result was lost.
    monkeypatch.setattr(lossbench.atomic_write, "tempfile", tempfile)
    resumed = run("run", suite, "--out", out, "--cache-dir", cache_dir, "--plain", "--no-report")
    assert resumed.exit_code == 0 and "ran 1, skipped 1" in resumed.output


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to simulate a full disk")
def test_a_full_disk_while_plotting_leaves_no_truncated_png(tmp_path: Path, cache_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(ONE_CELL)
    out = tmp_path / "results"
    assert run("run", suite, "--out", out, "--cache-dir", cache_dir, "--no-report").exit_code == 0
    monkeypatch.setattr(lossbench.atomic_write, "tempfile", _DiskFullAt("plots/", nth=1))
    result = run("report", out)
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert not list(out.rglob("*.png")) and not list(out.rglob("*.tmp"))
    assert not (out / "report.md").exists()


def _read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store's file creation fail as on a read-only file system (chmod does not stop root)."""
    def refuse(*args: object, **kwargs: object) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(lossbench.atomic_write, "tempfile", SimpleNamespace(mkstemp=refuse))
    monkeypatch.setattr(lossbench.store, "open", refuse, raising=False)


def test_a_read_only_results_directory_is_a_clear_error_before_training(tmp_path: Path, cache_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(ONE_CELL)
    out = tmp_path / "results"
    assert run("run", suite, "--out", out, "--cache-dir", cache_dir, "--no-report").exit_code == 0
    before = snapshot(out)
    _read_only(monkeypatch)
    for args in (["run", suite, "--out", out, "--cache-dir", cache_dir, "--force", "--plain"], ["report", out]):
        result = run(*args)
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert "Read-only file system" in text and "--out DIR" in text and "Traceback" not in text
        assert "[1/1]" not in text  # refused before the first cell started
    assert snapshot(out) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_a_directory_without_write_permission_is_a_clear_error(tmp_path: Path, cache_dir: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(ONE_CELL)
    out = tmp_path / "results"
    assert run("run", suite, "--out", out, "--cache-dir", cache_dir, "--no-report").exit_code == 0
    out.chmod(0o555)
    try:
        result = run("report", out)
        assert result.exit_code == 2 and "Permission denied" in result.output
    finally:
        out.chmod(0o755)


def test_another_suites_directory_is_refused_unless_forced(tmp_path: Path, cache_dir: Path) -> None:
    """A results directory belongs to one suite: suite B into suite A's directory is exit 2 with A's files as
    they were; --force runs B there, and results.csv tells the rows apart by suite, dataset and settings."""
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(ONE_CELL)
    b.write_text(ONE_CELL.replace("name: one", "name: other").replace("[cross_entropy]", "[mse]"))
    out = tmp_path / "out"
    assert run("run", a, "--out", out, "--cache-dir", cache_dir, "--no-report").exit_code == 0
    before = snapshot(out)
    result = run("run", b, "--out", out, "--cache-dir", cache_dir)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert f"--out {out}: results directory {out} holds suite 'one'; this run is suite 'other'" in text
    assert "--force" in text and "Traceback" not in text
    assert snapshot(out) == before
    result = run("run", b, "--out", out, "--cache-dir", cache_dir, "--force", "--no-report")
    assert result.exit_code == 0, result.output
    import csv

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(r["suite"] for r in rows) == ["one", "other"]
    assert {r["dataset"] for r in rows} == {"digits:sklearn|train=200|test=100"}


def test_another_dataset_in_the_same_suites_directory_is_refused(tmp_path: Path, cache_dir: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(ONE_CELL)
    out = tmp_path / "out"
    assert run("run", suite, "--out", out, "--cache-dir", cache_dir, "--no-report").exit_code == 0
    result = run("run", suite, "dataset.train_subset=150", "--out", out, "--cache-dir", cache_dir)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert ("holds suite 'one' on digits:sklearn|train=200|test=100; this run is suite 'one' on "
            "digits:sklearn|train=150|test=100") in text
    result = run("run", suite, "dataset.train_subset=150", "--out", out, "--cache-dir", cache_dir, "--force",
                 "--no-report")
    assert result.exit_code == 0, result.output
    import csv

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 and {r["label"] for r in rows} == {"cross_entropy | none | none"}
    # The two rows of one label and seed differ in their dataset and settings columns.
    assert len({r["dataset"] for r in rows}) == 2 and len({r["settings"] for r in rows}) == 2


def test_report_refuses_a_directory_it_did_not_make(tmp_path: Path, cache_dir: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(ONE_CELL)
    out = tmp_path / "out"
    assert run("run", suite, "--out", out, "--cache-dir", cache_dir, "--no-report").exit_code == 0
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "report.md").write_text("# my notes\n")
    (notes / "summary.csv").write_text("mine\n")
    before = snapshot(notes)
    for target in (notes, notes / "paper.md"):
        result = run("report", out, "--out", target)
        text = " ".join(result.output.split())
        assert result.exit_code == 2, text
        assert f"--out {target}:" in text and "not a lossbench" in text and "Traceback" not in text
        assert snapshot(notes) == before and not (notes / "plots").exists()
    # One named file of a single-file format is what was asked for: written, nothing beside it.
    assert run("report", out, "--out", notes / "table.tex", "--format", "latex").exit_code == 0
    assert set(snapshot(notes)) == {"report.md", "summary.csv", "table.tex"}
    # A new directory is made and marked; a second report into it is welcome.
    fresh = tmp_path / "fresh"
    for _ in range(2):
        result = run("report", out, "--out", fresh)
        assert result.exit_code == 0, result.output
    assert (fresh / MARKER).is_file() and (fresh / "report.md").is_file()
