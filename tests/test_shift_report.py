"""The report's "Under shift" and "Out of distribution" sections on cell files with known numbers: mCE against a
hand computation, the tables' values, the plot written, and no such sections without shift results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossbench.record import ShiftBlock
from lossbench.report import write_report

from test_report import ResultsDir

CE, FOCAL = "cross_entropy", "focal"
#: Accuracy per (loss, seed, corruption, severity); clean accuracy 0.95 everywhere.
ACC = {
    (CE, 0): {"contrast": [0.9, 0.7], "gaussian_noise": [0.8, 0.6]},
    (CE, 1): {"contrast": [0.8, 0.6], "gaussian_noise": [0.9, 0.5]},
    (FOCAL, 0): {"contrast": [0.95, 0.8], "gaussian_noise": [0.85, 0.5]},
    (FOCAL, 1): {"contrast": [0.9, 0.7], "gaussian_noise": [0.9, 0.7]},
}


def _block(loss: str, seed: int) -> dict:
    corruptions = {c: {str(s): {"acc": a, "nll": 1 - a, "ece": (1 - a) / 2} for s, a in zip((1, 3), accs)}
                   for c, accs in ACC[(loss, seed)].items()}
    auroc = 0.9 if loss == CE else 0.95
    return {"clean": {"acc": 0.95, "nll": 0.1, "ece": 0.02}, "corruptions": corruptions,
            "ood": {"uniform_noise": {"auroc_msp": auroc + 0.01 * seed, "fpr95_msp": 0.3, "auroc_energy": auroc,
                                      "fpr95_energy": 0.2, "images": 360}},
            "evaluations": [], "checkpoint_sha256": "ab" * 32}


def _results(root: Path, with_shift: bool = True) -> None:
    res = ResultsDir(root, suite="shift")
    for loss in (CE, FOCAL):
        for seed in (0, 1):
            record = res.add({"loss": loss}, seed, 0.95)
            if with_shift:
                record.metrics.shift = ShiftBlock.from_dict(_block(loss, seed))
                res.write(record)


def test_sections_tables_and_mce(tmp_path: Path) -> None:
    _results(tmp_path)
    files = write_report([tmp_path])
    text = files[0].read_text()
    assert "## Under shift" in text and "## Out of distribution" in text
    assert (tmp_path / "plots" / "under_shift.png").is_file() and tmp_path / "plots" / "under_shift.png" in files
    # mCE of focal against cross-entropy by hand, per seed then averaged.
    per_seed = []
    for seed in (0, 1):
        ces = [sum(1 - a for a in ACC[(FOCAL, seed)][c]) / sum(1 - a for a in ACC[(CE, seed)][c])
               for c in ("contrast", "gaussian_noise")]
        per_seed.append(sum(ces) / 2)
    mce = sum(per_seed) / 2
    focal_row = next(line for line in text.splitlines() if line.startswith("| focal \\| none \\| none | 2 |"))
    assert f"| {100 * mce:.2f} [" in focal_row
    # Corrupted accuracy: mean over corruptions × severities, then over seeds.
    corrupted = sum(sum(sum(v) for v in ACC[(FOCAL, s)].values()) / 4 for s in (0, 1)) / 2
    assert f"| {100 * corrupted:.2f} [" in focal_row
    assert "100 (reference)" in next(line for line in text.splitlines() if "(baseline) | 2 |" in line)
    ood_row = next(line for line in text.splitlines() if line.startswith("| uniform_noise | focal \\|"))
    assert "| 95.50 [" in ood_row  # AUROC MSP: 0.95 and 0.96 over the two seeds


def test_no_sections_without_shift_results(tmp_path: Path) -> None:
    _results(tmp_path, with_shift=False)
    text = write_report([tmp_path])[0].read_text()
    assert "Under shift" not in text and "Out of distribution" not in text
    assert not (tmp_path / "plots" / "under_shift.png").exists()


def test_cells_compare_on_the_corruptions_all_of_them_have(tmp_path: Path) -> None:
    _results(tmp_path)
    # One cell lacks gaussian_noise: every cell is then compared on contrast only.
    path = next(p for p in (tmp_path / "cells").glob("*.json") if json.loads(p.read_text())["seed"] == 1
                and json.loads(p.read_text())["axes"]["loss"] == FOCAL)
    record = json.loads(path.read_text())
    del record["metrics"]["shift"]["corruptions"]["gaussian_noise"]
    path.write_text(json.dumps(record))
    text = write_report([tmp_path])[0].read_text()
    assert "by 1 corruption(s) (contrast)" in text
    with pytest.raises(StopIteration):
        next(line for line in text.splitlines() if line.startswith("| cell |") and "gaussian_noise" in line)
