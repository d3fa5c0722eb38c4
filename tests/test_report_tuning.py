"""The report's Tuning section, on results directories written as a tuning run writes them: final cells as
CellRecords with a `tuned` block, tuning.csv with one row per trial, and suite.yaml with the `tune:` block."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lossbench.record import CellRecord, DataSizes, Environment, Epoch, Metrics, Timings
from lossbench.report import analyse, load_results, write_report
from lossbench.report.tuning_files import load_study, read_space
from lossbench.report.tuning_study import Range, edge_warnings, short_names, still_rising
from lossbench.store import ResultsStore

SPACE = {
    "train.optimizer.lr": {"low": 1.0e-4, "high": 1.0, "log": True},
    "train.optimizer.momentum": {"low": 0.5, "high": 0.99},
    "train.batch_size": {"choices": [64, 128, 256]},
    "loss.gamma": {"low": 0.0, "high": 5.0},  # applies to focal only
}
PATHS = list(SPACE)
DATA = DataSizes(train=1150, val=288, test=359, classes=10, image_size=[1, 8, 8])
EPOCHS = 4
ENV = Environment(lossbench="0.1.0", python="3.11.7", torch="2.4.0", device="cpu", device_name="x86_64", threads=1,
                  git_commit="0123456789abcdef")


class TunedDir:
    """A results directory of a tuning run: `cell()` adds one grid cell's trials and its final cells."""

    def __init__(self, root: Path, trials: int = 8, pruner: str = "none", space: dict[str, Any] | None = None,
                 metric: str = "val_acc"):
        self.root, self.trials, self.pruner, self.metric = root, trials, pruner, metric
        self.direction = "minimize" if metric in ("val_nll", "val_ece", "val_loss") else "maximize"
        self.space = space if space is not None else SPACE
        self.store = ResultsStore(root)
        self.rows: list[dict[str, Any]] = []
        self.minute = 0
        root.mkdir(parents=True, exist_ok=True)
        suite = {"name": "tuned-test", "dataset": {"name": "digits", "val_fraction": 0.2},
                 "model": {"name": "tutorial_cnn"},
                 "train": {"epochs": EPOCHS, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.03}},
                 "seeds": [0, 1, 2],
                 "tune": {"trials": trials, "metric": metric, "sampler": "tpe", "pruner": pruner, "seed": 0,
                          "space": self.space},
                 "grid": {"loss": ["cross_entropy"]}}
        (root / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")

    def _stamp(self) -> tuple[str, str]:
        m = self.minute
        self.minute += 1
        stamp = f"2026-01-01T{10 + m // 60:02d}:{m % 60:02d}"
        return f"{stamp}:00+00:00", f"{stamp}:30+00:00"

    def cell(self, loss: str, trials: list[tuple[str, dict[str, Any], float | None]], test_accs: list[float],
             tuned: bool = True, chosen: int | None = None) -> str:
        """Add a cell: `trials` are (state, values by path, val_acc) in trial order; the chosen trial (default:
        the best complete one) is trained on seeds 0.. with `test_accs`. Returns the label."""
        label = f"{loss} | none | none"
        cell_id = hashlib.sha256(label.encode()).hexdigest()[:10]
        for number, (state, values, val) in enumerate(trials):
            row: dict[str, Any] = {"cell": label, "cell_id": cell_id, "trial": number, "state": state}
            row.update({p: values.get(p, "") for p in self.space})
            row[self.metric] = "" if val is None else val
            row["epochs"] = EPOCHS if state == "complete" else (1 if state == "pruned" else 0)
            if tuned:
                self.rows.append(row)
        if chosen is None:
            sign = 1 if self.direction == "maximize" else -1
            chosen = max((i for i, t in enumerate(trials) if t[0] == "complete"), key=lambda i: sign * trials[i][2])
        params = trials[chosen][1]
        for seed, acc in enumerate(test_accs):
            self._final(loss, label, cell_id, seed, acc, params if tuned else {}, chosen, trials[chosen][2],
                        sum(EPOCHS if s == "complete" else (1 if s == "pruned" else 0) for s, _, _ in trials),
                        tuned)
        return label

    def _final(self, loss: str, label: str, cell_id: str, seed: int, acc: float, params: dict[str, Any],
               trial: int, value: float | None, epochs: int, tuned: bool) -> None:
        name = loss.split("(")[0]
        optimizer = {"lr": params.get("train.optimizer.lr", 0.03), "momentum": params.get("train.optimizer.momentum",
                                                                                           0.9)}
        config: dict[str, Any] = {
            "dataset": {"identity": "digits:sklearn", "name": "digits"},
            "model": {"name": "tutorial_cnn", "params": {"padding": "auto"}},
            "train": {"epochs": EPOCHS, "batch_size": params.get("train.batch_size", 64),
                      "schedule": {"name": "cosine", "params": {}}, "precision": "fp32"},
            "loss": {"name": name, "params": {"gamma": params["loss.gamma"]} if "loss.gamma" in params else {}},
            "regularizer": [{"name": "none", "params": {}}], "augmentation": [{"name": "none", "params": {}}],
            "optimizer": {"name": "sgd", "params": optimizer}, "seed": seed,
        }
        if tuned:
            config["tuned"] = {"study": "tuned-test", "cell_id": cell_id, "trial": trial, "trials": self.trials,
                               "epochs": epochs, "metric": self.metric, "direction": self.direction, "value": value,
                               "params": params, "tuning_seeds": [1000], "sampler": "tpe", "pruner": self.pruner}
        rid = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
        started, finished = self._stamp()
        history = [Epoch(epoch=e, train_loss=1.0 / e, train_acc=acc, test_acc=acc * (0.8 + 0.2 * e / EPOCHS),
                         test_loss=0.5 / e, lr=optimizer["lr"], epoch_s=0.5) for e in range(1, EPOCHS + 1)]
        record = CellRecord(
            id=rid, label=label, seed=seed, status="done", suite="tuned-test",
            axes={"loss": loss, "regularizer": "none", "augmentation": "none", "optimizer": "sgd(lr=0.03)"},
            config=config, metrics=Metrics(test_acc=acc, test_top5=1.0, test_nll=1 - acc, ece=0.02,
                                           train_acc=min(1.0, acc + 0.01), gap=0.01),
            history=history, timing=Timings(train_time_s=2.0, img_per_s=1000.0, epochs_run=EPOCHS, peak_mem_mb=100.0,
                                            eval_time_s=0.2),
            data=DATA, precision="fp32", env=ENV, started_at=started, finished_at=finished)
        self.store.write_cell(record)

    def write_csv(self) -> Path:
        path = self.root / "tuning.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["cell", "cell_id", "trial", "state", *self.space, self.metric,
                                                   "epochs"])
            writer.writeheader()
            writer.writerows(self.rows)
        return path


def _trials(lrs: list[float], accs: list[float | None], extra: dict[str, Any] | None = None,
            states: list[str] | None = None) -> list[tuple[str, dict[str, Any], float | None]]:
    states = states or ["complete"] * len(lrs)
    return [(s, {"train.optimizer.lr": lr, "train.optimizer.momentum": 0.7, "train.batch_size": 128,
                 **(extra or {})}, acc) for s, lr, acc in zip(states, lrs, accs)]


# Learning rates: 1.2e-4 is in the lowest 10 % of [1e-4, 1] on the log scale (position 0.02); 9e-4 is at 0.24 on
# the log scale (but at 0.0008 on a linear one: only the log scale keeps it out of the warning); 0.01 is central.
FLAT = [0.5, 0.8, 0.9, 0.91, 0.905, 0.9, 0.89, 0.91]


def standard(root: Path) -> TunedDir:
    """arcface chose lr 1.2e-4 (edge), cross_entropy 9e-4 (inside on the log scale), focal 0.01 with gamma."""
    d = TunedDir(root)
    d.cell("arcface", _trials([0.5, 0.01, 0.003, 1.2e-4, 0.1, 0.02, 0.2, 0.3],
                              [0.1, 0.3, 0.4, 0.6, 0.2, 0.3, 0.1, 0.1]), [0.55, 0.57, 0.56])
    d.cell("cross_entropy", _trials([0.5, 0.01, 0.003, 9e-4, 0.1, 0.02, 0.2, 0.3], FLAT), [0.95, 0.96, 0.955])
    d.cell("focal(gamma=2)", _trials([0.01] * 8, [0.5, 0.7, 0.8, None, 0.85, 0.84, 0.9, 0.97],
                                     extra={"loss.gamma": 2.5},
                                     states=["complete", "pruned", "complete", "failed", "complete", "pruned",
                                             "complete", "complete"]),
           [0.93, 0.94, 0.935])
    d.write_csv()
    return d


def _tuning_section(text: str) -> str:
    match = re.search(r"^## Tuning\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "no Tuning section"
    return match.group(1)


def test_section_with_protocol_tables_and_plots(tmp_path: Path) -> None:
    root = tmp_path / "tuned"
    standard(root)
    written = write_report([root])
    text = (root / "report.md").read_text(encoding="utf-8")
    section = _tuning_section(text)
    # The protocol: budget, sampler, pruner, metric, split sizes from the records, tuning and verdict seeds.
    for needle in ("8 trials", "tpe sampler (seed 0)", "no pruning", "`val_acc`", "1,150 images", "288 images",
                   "359 test images", "Tuning seeds: 1000", "verdict seeds 0, 1, 2"):
        assert needle in section, needle
    # The three cells form one source (their chosen values differ, yet they are one run) and are all ranked.
    assert "## Leaderboard" in text and text.count("| arcface \\| none \\| none |") >= 2
    assert "Side by side" not in text
    # Setup states the per-cell recipe values as ranges rather than one cell's.
    assert "| learning rate | 0.00012–0.01 after epoch 1 (differs by cell)" in text
    assert ("| optimizer | sgd(lr=0.03) before tuning; tuned per cell: train.optimizer.lr, train.optimizer.momentum, "
            "train.batch_size, loss.gamma (see Tuning) |") in text
    # Every tuning plot is written, is a real PNG, and is linked from the section.
    pngs = sorted(p.name for p in (root / "plots").glob("tuning_*.png"))
    assert pngs == ["tuning_best_so_far.png", "tuning_loss.gamma.png", "tuning_train.batch_size.png",
                    "tuning_train.optimizer.lr.png", "tuning_train.optimizer.momentum.png"]
    for name in pngs:
        assert f"](plots/{name})" in section
        data = (root / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert root / "plots" / name in written
    # Chosen values per cell: the chosen trial's values, to 3 significant digits.
    row = next(line for line in section.splitlines() if line.startswith("| cross_entropy"))
    assert "| 0.0009 |" in row and "| 0.7 |" in row and "| 128 |" in row and "| 91.00 |" in row


def test_edge_warning_at_the_boundary_and_none_inside(tmp_path: Path) -> None:
    root = tmp_path / "tuned"
    standard(root)
    write_report([root], plots=False)
    section = _tuning_section((root / "report.md").read_text(encoding="utf-8"))
    warnings = [line for line in section.splitlines() if line.startswith("- ⚠")]
    # arcface chose 1.2e-4 in [1e-4, 1] (log scale): position log(1.2)/log(1e4) = 0.02 < 0.1.
    assert any("widen the range of train.optimizer.lr for arcface" in w and "lowest 10%" in w for w in warnings)
    # cross_entropy chose 9e-4: linear position 0.0008 but log position 0.24, so no warning; focal's 0.01 is
    # central; momentum 0.7 is at 0.41; batch size is a list of choices and never warned about.
    assert len(warnings) == 1, warnings
    row = next(line for line in section.splitlines() if line.startswith("| arcface"))
    assert "0.00012 ⚠" in row
    # The headline carries the caveat too: a reader who stops there learns the search may have missed.
    head = (root / "report.md").read_text(encoding="utf-8").split("## Setup")[0]
    assert ("> ⚠ **Tuning may have missed better settings:** 1 chosen value lies at the edge of its range "
            "(`arcface`: train.optimizer.lr) and 1 cell was still improving at the last trial "
            "(`focal(gamma=2)`)") in head


def test_edge_positions_match_hand_computation(tmp_path: Path) -> None:
    lr = Range("train.optimizer.lr", 1e-4, 1.0, log=True)
    assert lr.position(1e-4) == pytest.approx(0.0)
    assert lr.position(1e-2) == pytest.approx(0.5)
    assert lr.position(0.5) == pytest.approx((math.log10(0.5) + 4) / 4)
    mom = Range("train.optimizer.momentum", 0.5, 0.99)
    assert mom.position(0.98) == pytest.approx(0.48 / 0.49)
    assert Range("train.batch_size", choices=(64, 128)).position(128) is None
    assert read_space({"tune": {"space": SPACE}})["train.batch_size"].choices == (64, 128, 256)

    # High edge, linear and log; a value exactly at 10% of the width is not in the outer 10%.
    root = tmp_path / "tuned"
    d = TunedDir(root)
    d.cell("cross_entropy", _trials([0.5, 0.01], [0.9, 0.5], extra={"train.optimizer.momentum": 0.98}),
           [0.9, 0.9])
    d.cell("hinge", _trials([0.01, 0.01], [0.9, 0.5], extra={"train.optimizer.momentum": 0.549}), [0.8, 0.8])
    d.write_csv()
    results = load_results([root])
    study = load_study(analyse(results)[0], results)
    assert study is not None
    found = {(w.name, w.path, w.side) for w in edge_warnings(study)}
    # 0.5 is at 0.92 on the log scale (high edge) though at 0.5 linearly; momentum 0.98 at 0.98 (high edge);
    # hinge's momentum 0.549 is at exactly 0.1 of [0.5, 0.99]: not in the outer 10%.
    assert found == {("cross_entropy", "train.optimizer.lr", "high"),
                     ("cross_entropy", "train.optimizer.momentum", "high")}


def test_still_rising_rule() -> None:
    # Budget 20: the last window is trials 15..19 (⌈0.25 × 20⌉ = 5).
    flat = still_rising(range(20), [0.5, 0.9] + [0.89] * 18, 20)
    assert flat.status == "flat" and flat.window_start == 15
    late = still_rising(range(20), [0.5, 0.8] + [0.79] * 17 + [0.9], 20)
    assert late.status == "rising" and late.before == 0.8 and late.end == 0.9
    # An improvement below 5% of the whole gain (0.4 here: 0.02 allowed) is a plateau, not a rise.
    small = still_rising(range(20), [0.5, 0.89] + [0.8] * 17 + [0.9], 20)
    assert small.status == "flat" and small.threshold == pytest.approx(0.02)
    # ... and so is one of a single validation image, whatever the gain.
    assert still_rising(range(20), [0.5, 0.89] + [0.8] * 17 + [0.9], 20, resolution=0.0).status == "flat"
    assert still_rising(range(20), [0.1, 0.5] + [0.4] * 17 + [0.53], 20, resolution=1 / 100).status == "rising"
    assert still_rising(range(20), [0.1, 0.5] + [0.4] * 17 + [0.505], 20, resolution=1 / 100).status == "flat"
    # Minimised metrics are negated by the caller: a falling NLL is a rising curve.
    assert still_rising(range(8), [-2.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -0.5], 8).status == "rising"
    # Too short a budget, or nothing complete before the window: not judged.
    assert still_rising(range(3), [0.1, 0.2, 0.9], 3).status == "unjudged"
    assert still_rising([6, 7], [0.1, 0.9], 8).status == "unjudged"
    # Only complete trials count; trial numbers need not be contiguous (pruned and failed ones are skipped).
    assert still_rising([0, 2, 3, 7], [0.5, 0.9, 0.9, 0.95], 8).status == "rising"


def test_report_says_the_budget_was_too_small_only_when_a_curve_still_rises(tmp_path: Path) -> None:
    root = tmp_path / "rising"
    d = TunedDir(root)
    d.cell("cross_entropy", _trials([0.01] * 8, FLAT), [0.95, 0.96])
    d.cell("hinge", _trials([0.01] * 8, [0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.9]), [0.9, 0.91])
    d.write_csv()
    write_report([root], plots=False)
    section = _tuning_section((root / "report.md").read_text(encoding="utf-8"))
    assert "The budget was too small**: 1 of 2 curves was" in section
    assert "`hinge` 60.00 → 90.00" in section and "`cross_entropy`" not in section.split("too small")[1][:200]
    assert "last 2 trials (trials 6–7)" in section

    root = tmp_path / "flat"
    d = TunedDir(root)
    d.cell("cross_entropy", _trials([0.01] * 8, FLAT), [0.95, 0.96])
    d.write_csv()
    write_report([root], plots=False)
    section = _tuning_section((root / "report.md").read_text(encoding="utf-8"))
    assert "The budget was too small" not in section and "No curve was still rising" in section
    assert "Tuning may have missed" not in (root / "report.md").read_text(encoding="utf-8")


def test_pruned_and_failed_trials(tmp_path: Path) -> None:
    root = tmp_path / "pruned"
    d = TunedDir(root, pruner="median")
    # A pruned trial's partial value (0.99) is higher than any complete one: it must not be taken as the best.
    d.cell("cross_entropy", _trials([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08],
                                    [0.7, 0.99, 0.8, None, 0.85, 0.6, 0.82, 0.81],
                                    states=["complete", "pruned", "complete", "failed", "complete", "pruned",
                                            "complete", "complete"]),
           [0.9, 0.91])
    d.write_csv()
    results = load_results([root])
    study = load_study(analyse(results)[0], results)
    assert study is not None
    cell = study.cells[0]
    assert (cell.count("complete"), cell.count("pruned"), cell.count("failed")) == (5, 2, 1)
    assert cell.chosen_trial == 4 and cell.chosen_value == 0.85
    assert cell.epochs == 5 * EPOCHS + 2 * 1
    assert study.rise(cell).end == 0.85  # the best-so-far curve is of complete trials only
    write_report([root])
    section = _tuning_section((root / "report.md").read_text(encoding="utf-8"))
    assert "the median pruner" in section
    assert "| 5/2/1 |" in section
    assert "trials: 5 complete, 2 pruned, 1 failed" in section
    # 22 epochs of the 32 that 8 trials × 4 epochs would cost: 69%.
    assert "Tuning cost 22 epochs in all, 69% of the 32" in section
    assert (root / "plots" / "tuning_train.optimizer.lr.png").stat().st_size > 5000


def test_paths_that_apply_to_some_cells_only(tmp_path: Path) -> None:
    root = tmp_path / "tuned"
    standard(root)
    write_report([root], plots=False)
    section = _tuning_section((root / "report.md").read_text(encoding="utf-8"))
    space = section.split("**Search space**")[1].split("**Chosen values")[0]
    assert "| `loss.gamma` | [0, 5] | `focal(gamma=2)` |" in space
    assert "| `train.optimizer.lr` | [0.0001, 1] (log scale) | all 3 |" in space
    header, *rows = [_cells(line) for line in section.splitlines() if line.startswith("| cell | `train.")
                     or re.match(r"\| \w+(\(gamma=2\))? \\\| none", line)]
    gamma = header.index("`loss.gamma`")
    chosen = {row[0]: row[gamma] for row in rows}
    assert chosen == {"arcface \\| none \\| none": "—", "cross_entropy \\| none \\| none": "—",
                      "focal(gamma=2) \\| none \\| none": "2.5"}


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row (a '|' escaped as '\\|' stays inside its cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_ranking_change_against_untuned_cells_of_the_same_directory(tmp_path: Path) -> None:
    root = tmp_path / "both"
    d = TunedDir(root)
    # Untuned (one shared recipe): arcface worst; tuned: arcface best.
    for loss, acc in (("arcface", 0.3), ("cross_entropy", 0.95), ("hinge", 0.9)):
        d.cell(loss, _trials([0.03], [0.5]), [acc, acc + 0.01], tuned=False)
    for loss, acc in (("arcface", 0.97), ("cross_entropy", 0.96), ("hinge", 0.91)):
        d.cell(loss, _trials([0.01] * 4, [0.5, 0.6, 0.7, 0.8]), [acc, acc + 0.005])
    d.write_csv()
    results = load_results([root])
    assert not any("earlier run" in w for w in results.warnings), results.warnings
    # The tuned cells come first: they are the verdict.
    assert [(s.name, s.tuned) for s in results.sources] == [("digits · tuned", True), ("digits · untuned", False)]
    write_report([root], plots=False)
    text = (root / "report.md").read_text(encoding="utf-8")
    assert text.count("### Tuning") == 1  # the untuned source has no Tuning section
    section = text.split("### Tuning")[1].split("\n### ")[0]
    table = section.split("**Ranking before and after tuning**")[1]
    assert "| arcface \\| none \\| none | 3 → 1 | ↑ 2 | 30.50 | 97.25 |" in table
    assert "| cross_entropy \\| none \\| none | 1 → 2 | ↓ 1 |" in table
    assert "| hinge \\| none \\| none | 2 → 3 | ↓ 1 |" in table
    assert "3 of them changed rank" in table


def test_without_tuning_csv_the_section_still_reports_the_chosen_values(tmp_path: Path) -> None:
    root = tmp_path / "nocsv"
    d = TunedDir(root)
    d.cell("cross_entropy", _trials([0.01, 0.02, 1.1e-4], [0.5, 0.6, 0.9]), [0.95, 0.96])
    write_report([root])
    section = _tuning_section((root / "report.md").read_text(encoding="utf-8"))
    assert "no tuning.csv beside the cell files" in section
    assert "widen the range of train.optimizer.lr for cross_entropy | none | none" in section
    assert not list((root / "plots").glob("tuning_*.png"))


def test_short_names_keep_the_parts_that_differ() -> None:
    assert short_names(["arcface | none | none", "focal | none | none"]) == {
        "arcface | none | none": "arcface", "focal | none | none": "focal"}
    assert short_names(["ce | l2 | none", "ce | none | crop"]) == {"ce | l2 | none": "l2 | none",
                                                                   "ce | none | crop": "none | crop"}
    assert short_names(["ce | none | none"]) == {"ce | none | none": "ce | none | none"}


def test_many_losses_get_one_panel_each(tmp_path: Path) -> None:
    root = tmp_path / "many"
    d = TunedDir(root, trials=4, space={"train.optimizer.lr": SPACE["train.optimizer.lr"]})
    losses = ["cross_entropy", "focal", "hinge", "mse", "arcface", "cosface", "poly1"]
    for i, loss in enumerate(losses):
        d.cell(loss, _trials([10 ** -(1 + i / 3)] * 4, [0.5, 0.6 + i / 100, 0.7, 0.65]), [0.9, 0.91])
    d.write_csv()
    write_report([root])
    section = _tuning_section((root / "report.md").read_text(encoding="utf-8"))
    # Past FACET_LOSSES losses one colour each cannot be told apart: one panel per loss, the others in grey.
    assert "one panel per loss, the other losses' complete trials in grey" in section
    assert (root / "plots" / "tuning_train.optimizer.lr.png").stat().st_size > 20000


def test_ranges_from_the_study_storage_when_suite_yaml_has_no_tune_block(tmp_path: Path) -> None:
    import optuna

    root = tmp_path / "later-untuned"
    d = TunedDir(root)
    d.cell("cross_entropy", _trials([0.01, 0.95], [0.5, 0.9]), [0.95, 0.96])
    d.write_csv()
    # An untuned run into the same directory later replaced suite.yaml; Optuna's storage still holds the ranges.
    (root / "suite.yaml").write_text("name: tuned-test\ndataset: {name: digits}\n", encoding="utf-8")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{root / 'tuning.db'}", study_name="cell-a")
    dists = {"train.optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
             "train.batch_size": optuna.distributions.CategoricalDistribution([64, 128, 256])}
    study.tell(study.ask(dists), 0.5)
    write_report([root], plots=False)
    section = _tuning_section((root / "report.md").read_text(encoding="utf-8"))
    assert "**Search space** (from the study's record in tuning.db" in section
    assert "| `train.optimizer.lr` | [0.0001, 1] (log scale) | the one cell |" in section
    assert "widen the range of train.optimizer.lr for cross_entropy | none | none: its best value 0.95 lies in the " \
           "highest 10%" in section


def test_a_minimised_metric(tmp_path: Path) -> None:
    root = tmp_path / "nll"
    d = TunedDir(root, metric="val_nll")
    # NLL falls (improves) at the last trial: a rising curve once turned; the chosen trial is the lowest.
    d.cell("cross_entropy", _trials([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08],
                                    [1.2, 0.5, 0.6, 0.55, 0.7, 0.52, 0.6, 0.2]), [0.95, 0.96])
    d.cell("hinge", _trials([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08],
                            [1.2, 0.3, 0.6, 0.55, 0.7, 0.52, 0.6, 0.31]), [0.9, 0.91])
    d.write_csv()
    results = load_results([root])
    study = load_study(analyse(results)[0], results)
    assert study is not None and not study.higher and study.resolution == 0.0
    assert [(c.chosen_trial, c.chosen_value) for c in study.cells] == [(7, 0.2), (1, 0.3)]
    assert [study.rise(c).status for c in study.cells] == ["rising", "flat"]
    write_report([root])
    section = _tuning_section((root / "report.md").read_text(encoding="utf-8"))
    assert "minimising val NLL (`val_nll`)" in section
    assert "curves was still falling at the last trial (`cross_entropy` 0.500 → 0.200)" in section
    assert (root / "plots" / "tuning_best_so_far.png").stat().st_size > 5000


def test_a_directory_still_tuning_says_how_to_finish(tmp_path: Path) -> None:
    from lossbench.report import ReportError

    root = tmp_path / "tuning"
    d = TunedDir(root)
    d.rows.append({"cell": "ce | none | none", "cell_id": "a", "trial": 0, "state": "complete",
                   "train.optimizer.lr": 0.01, "val_acc": 0.9, "epochs": EPOCHS})
    d.write_csv()
    (root / "cells").mkdir()
    with pytest.raises(ReportError) as err:
        write_report([root])
    assert "holds no cell results" in err.value.message
    assert "tuning has begun" in " ".join(err.value.details) and "resumes it" in " ".join(err.value.details)


def test_report_json_carries_the_tuning(tmp_path: Path) -> None:
    root = tmp_path / "tuned"
    standard(root)
    path = write_report([root], fmt="json")[0]
    doc = json.loads(path.read_text(encoding="utf-8"))
    tuning = doc["sources"][0]["tuning"]
    assert tuning["trials_per_cell"] == 8 and tuning["direction"] == "maximize" and tuning["verdict_seeds"] == [0, 1, 2]
    assert tuning["space"]["train.batch_size"] == {"choices": [64, 128, 256]}
    arcface = next(c for c in tuning["cells"] if c["label"].startswith("arcface"))
    assert arcface["params"]["train.optimizer.lr"] == 1.2e-4 and arcface["chosen_trial"] == 3
    focal = next(c for c in tuning["cells"] if c["label"].startswith("focal"))
    assert (focal["complete"], focal["pruned"], focal["failed"], focal["curve"]) == (5, 2, 1, "rising")
    assert [(w["label"], w["path"], w["side"]) for w in tuning["edge_warnings"]] == [
        ("arcface | none | none", "train.optimizer.lr", "low")]
