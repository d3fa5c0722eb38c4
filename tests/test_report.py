"""`lossbench report` on small fixed result sets written as cell files: the golden Markdown, diverged and failed
cells, one seed, merging directories, the machine formats and the CLI's errors."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from lossbench.cli import app
from lossbench.record import (
    CellRecord, DataSizes, Environment, Epoch, MachineLoad, Metrics, Reliability, Status, Timings,
)
from lossbench.report import ReportError, analyse, load_results, write_report
from lossbench.report.formats import latex_escape

GOLDEN = Path(__file__).parent / "golden" / "report_small.md"
ENV = Environment(lossbench="0.1.0", python="3.11.7", torch="2.4.0", torchvision="0.19.0", device="cpu",
                  device_name="x86_64", threads=2, hostname="bench", platform="Linux", git_commit="0123456789abcdef")


class ResultsDir:
    """Writes cell files the way `lossbench run` does, with fixed numbers."""

    def __init__(self, root: Path, suite: str = "golden", dataset: str = "digits", epochs: int = 3):
        self.root, self.suite, self.dataset, self.epochs = root, suite, dataset, epochs
        self.count = 0
        (root / "cells").mkdir(parents=True, exist_ok=True)
        (root / "suite.yaml").write_text(f"name: {suite}\ndescription: Fixed numbers for report tests.\n"
                                         f"dataset:\n  name: {dataset}\n")

    def add(self, axes: dict[str, str], seed: int, acc: float | None, status: Status = "done",
            epochs: int | None = None, loss_params: dict[str, Any] | None = None,
            load_1m: float = 0.5) -> CellRecord:
        epochs = epochs or self.epochs
        axes = {"loss": axes["loss"], "regularizer": "none", "augmentation": "none", "optimizer": "sgd(lr=0.05)",
                **axes}
        label = " | ".join(v for k, v in axes.items() if k != "optimizer")
        config = {"dataset": {"identity": f"{self.dataset}|v1", "name": self.dataset},
                  "model": {"name": "tutorial_cnn", "params": {"padding": "auto"}},
                  "train": {"epochs": epochs, "batch_size": 32, "schedule": {"name": "cosine", "params": {}},
                            "precision": "fp32"},
                  **{k: {"name": v, "params": {}} for k, v in axes.items()}, "seed": seed}
        config["loss"]["params"] = loss_params or {}
        rid = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
        minute = self.count
        self.count += 1
        record = CellRecord(
            id=rid, label=label, suite=self.suite, seed=seed, axes=axes, config=config, status=status,
            precision="fp32", env=ENV,
            started_at=f"2026-01-01T{10 + minute // 60:02d}:{minute % 60:02d}:00+00:00",
            finished_at=f"2026-01-01T{10 + minute // 60:02d}:{minute % 60:02d}:30+00:00",
            data=DataSizes(train=1437, val=0, test=360, classes=10, image_size=[1, 8, 8]),
            load=MachineLoad(cores=2, start_load_1m=load_1m, start_cpu_time_s=10.0, end_load_1m=load_1m + 0.25,
                             end_cpu_time_s=14.0),
        )
        if status == "failed":
            record.error = "RuntimeError: shapes do not match\nsecond line"
            record.traceback = "Traceback ..."
        elif status == "diverged":
            record.diverged_epoch = 2
            record.error = "training loss became nan in epoch 2"
            record.timing = Timings(train_time_s=1.0, img_per_s=900.0, epochs_run=2, peak_mem_mb=400.0)
        else:
            assert acc is not None
            record.metrics = _metrics(acc)
            record.history = [Epoch(epoch=e, train_loss=2.0 / e, train_acc=acc * e / epochs, test_loss=1.5 / e,
                                    test_acc=acc * (0.7 + 0.3 * e / epochs), test_top5=1.0, lr=0.05, epoch_s=1.0)
                              for e in range(1, epochs + 1)]
            train = 3.0 + seed * 0.25
            record.timing = Timings(train_time_s=train, img_per_s=1200.0 - 10 * seed, epochs_run=epochs,
                                    peak_mem_mb=512.0, epoch_eval_s=0.25 * epochs, final_eval_s=0.5,
                                    eval_time_s=0.5 + 0.25 * epochs, overhead_s=0.75,
                                    cell_s=train + 0.5 + 0.25 * epochs + 0.75)
        if axes["loss"] == "mse":
            record.notes = ["loss 'mse' does not train softmax(outputs) as probabilities"]
        self.write(record)
        return record

    def write(self, record: CellRecord) -> None:
        """(Re)write a record's cell file."""
        (self.root / "cells" / f"{record.id}.json").write_text(json.dumps(record.to_dict(), indent=1))


def _metrics(acc: float) -> Metrics:
    wrong = round((1 - acc) * 200)
    confusion = [[100 - wrong // 2, wrong // 2], [wrong - wrong // 2, 100 - (wrong - wrong // 2)]]
    return Metrics(test_acc=acc, test_top5=1.0, test_loss=1 - acc, test_nll=2 * (1 - acc), ece=(1 - acc) / 4,
                   train_acc=min(1.0, acc + 0.03), gap=min(1.0, acc + 0.03) - acc,
                   per_class_acc=[c[i] / 100 for i, c in enumerate(confusion)], confusion=confusion,
                   reliability=Reliability(count=[0.0, 20.0, 180.0], confidence=[0.0, 0.5, 0.95],
                                           accuracy=[0.0, 0.45, acc]))


CE, MSE = "cross_entropy", "mse"


def golden_set(root: Path) -> ResultsDir:
    """2 losses × 2 augmentations × 3 seeds; one seed diverged, one failed, one ran on a loaded machine."""
    res = ResultsDir(root)
    numbers = {(CE, "none"): [0.900, 0.910, 0.905], (CE, "hflip"): [0.930, 0.935, 0.940],
               (MSE, "none"): [0.880, None, 0.890], (MSE, "hflip"): [0.925, 0.920, None]}
    for (loss, aug), accs in numbers.items():
        for seed, acc in enumerate(accs):
            status = "done" if acc is not None else ("failed" if aug == "none" else "diverged")
            loaded = (loss, aug, seed) == (MSE, "hflip", 1)
            res.add({"loss": loss, "augmentation": aug}, seed, acc, status, load_1m=3.5 if loaded else 0.5)
    return res


def _links(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_golden_markdown_and_plots(tmp_path: Path) -> None:
    root = tmp_path / "results"
    golden_set(root)
    written = write_report([root])
    text = (root / "report.md").read_text(encoding="utf-8")
    if os.environ.get("LOSSBENCH_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    expected = GOLDEN.read_text(encoding="utf-8")
    assert text == expected, "report.md changed; rerun with LOSSBENCH_UPDATE_GOLDEN=1 if the change is intended"
    # Every plot is written, is a real PNG, and is linked relatively from the report (and nothing else is).
    pngs = sorted(p.relative_to(root).as_posix() for p in (root / "plots").glob("*.png"))
    assert len(pngs) == 5
    assert sorted(_links(text)) == pngs
    for rel in pngs:
        data = (root / rel).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert {p.name for p in written} >= {"report.md", "summary.csv"}


def test_diverged_and_failed_cells_are_listed_and_left_out_of_statistics(tmp_path: Path) -> None:
    res = golden_set(tmp_path)
    for seed in range(3):  # a grid point whose every seed failed
        res.add({"loss": "focal(gamma=2)"}, seed, None, "failed")
    [a] = analyse(load_results([tmp_path]))
    s = a.summary.set_index("label")
    row = s.loc["mse | none | hflip"]
    assert (row["n_seeds"], row["n_done"], row["n_diverged"], row["n_failed"]) == (3, 2, 1, 0)
    assert row["test_acc_mean"] == pytest.approx((0.925 + 0.920) / 2)
    assert s.loc["mse | none | none", "n_failed"] == 1
    focal = s.loc["focal(gamma=2) | none | none"]
    assert np.isnan(focal["rank"]) and focal["n_failed"] == 3
    assert sorted(a.unranked["status"]) == ["diverged", "failed", "failed", "failed", "failed"]
    verdicts = {c.label: c for c in a.comparisons}
    assert verdicts["mse | none | hflip"].test.n == 2  # paired over the seeds both cells finished
    assert verdicts["focal(gamma=2) | none | none"].verdict.startswith("not tested: no seed")
    write_report([tmp_path], plots=False)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    board = text.split("**Diverged and failed cells**")[1].split("## Every seed")[0]
    assert board.count("| failed |") == 4 and board.count("| diverged |") == 1
    assert "| mse \\| none \\| hflip | 2 | diverged | epoch 2 | training loss became nan in epoch 2 |" in board
    assert "RuntimeError: shapes do not match |" in board  # first line of the error only
    assert "| 2/3 (1 diverged) |" in text
    rows = list(csv.DictReader(io.StringIO((tmp_path / "summary.csv").read_text(encoding="utf-8"))))
    focal_row = next(r for r in rows if r["label"].startswith("focal"))
    assert (focal_row["rank"], focal_row["n_failed"], focal_row["test_acc_mean"]) == ("", "3", "")


def test_one_seed_report_says_why_there_is_no_interval(tmp_path: Path) -> None:
    res = ResultsDir(tmp_path)
    res.add({"loss": CE}, 0, 0.90)
    res.add({"loss": MSE}, 0, 0.93)
    write_report([tmp_path], plots=False)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Only one seed per cell: no confidence intervals" in text
    assert "| 1 | mse \\| none \\| none | 93.00 | 1 |" in text
    assert "not tested: one paired seed: a t-test needs at least two" in text
    row = next(csv.DictReader(io.StringIO((tmp_path / "summary.csv").read_text(encoding="utf-8"))))
    assert row["test_acc_ci_low"] == "" and row["test_acc_std"] == "" and row["test_acc_mean"] == "0.93"


def test_two_datasets_side_by_side(tmp_path: Path) -> None:
    a, b = tmp_path / "digits", tmp_path / "mnist"
    for root, dataset, shift in ((a, "digits", 0.0), (b, "mnist", 0.05)):
        res = ResultsDir(root, suite="grid", dataset=dataset)
        for seed in range(2):
            res.add({"loss": CE}, seed, 0.90 + shift + seed / 100)
            res.add({"loss": MSE}, seed, 0.88 + seed / 100)
    with pytest.raises(ReportError, match="--out"):
        write_report([a, b])
    out = tmp_path / "merged"
    write_report([a, b], out)
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "## Side by side" in text and "## digits" in text and "## mnist" in text
    assert "| cross_entropy \\| none \\| none | 90.50 [84.15, 96.85] (#1) | 95.50 [89.15, 100.00] (#1) |" in text
    links = _links(text)
    assert {link.split("/")[1] for link in links} == {"digits", "mnist"}
    assert all((out / link).stat().st_size > 5000 for link in links)
    assert "`../digits`" in text  # results directories relative to the report


def test_directories_of_one_suite_merge_their_seeds(tmp_path: Path) -> None:
    first, second = ResultsDir(tmp_path / "a"), ResultsDir(tmp_path / "b")
    for seed, acc in ((0, 0.90), (1, 0.91)):
        first.add({"loss": CE}, seed, acc)
    dup = second.add({"loss": CE}, 1, 0.91)
    second.add({"loss": CE}, 2, 0.92)
    results = load_results([tmp_path / "a", tmp_path / "b"])
    [a] = analyse(results)
    assert len(results.sources) == 1 and len(results.sources[0].dirs) == 2
    assert a.summary.loc[0, "n_seeds"] == 3 and a.summary.loc[0, "test_acc_mean"] == pytest.approx(0.91)
    assert any(dup.id in w for w in results.warnings)
    # A run with other settings stands beside them, named by what differs.
    longer = ResultsDir(tmp_path / "c", epochs=5)
    longer.add({"loss": CE}, 0, 0.95)
    merged = load_results([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert [s.name for s in merged.sources] == ["digits (epochs=3)", "digits (epochs=5)"]
    assert [len(s.dirs) for s in merged.sources] == [2, 1]


def test_stale_cells_from_an_earlier_configuration_are_ignored(tmp_path: Path) -> None:
    res = ResultsDir(tmp_path)
    res.add({"loss": CE}, 0, 0.50, epochs=1)  # an earlier run with one epoch
    res.add({"loss": CE}, 0, 0.90)
    res.add({"loss": CE}, 1, 0.92)
    results = load_results([tmp_path])
    [a] = analyse(results)
    assert a.summary.loc[0, "n_seeds"] == 2 and a.summary.loc[0, "test_acc_mean"] == pytest.approx(0.91)
    assert "1 cell file(s)" in results.warnings[0] and "from an earlier run with other settings" in results.warnings[0]
    # Same label, same run settings, another resolved loss configuration (a default changed): the latest wins.
    res.add({"loss": MSE}, 0, 0.40, loss_params={"reduction": "sum"})
    res.add({"loss": MSE}, 0, 0.80, loss_params={"reduction": "mean"})
    results = load_results([tmp_path])
    [a] = analyse(results)
    mse = a.summary.set_index("label").loc["mse | none | none"]
    assert mse["n_seeds"] == 1 and mse["test_acc_mean"] == pytest.approx(0.80)
    assert any("older cell file(s) of 'mse | none | none'" in w for w in results.warnings)


def test_extra_axis_baseline_per_stratum(tmp_path: Path) -> None:
    res = ResultsDir(tmp_path)
    for scenario, base in (("clean", 0.90), ("noisy", 0.70)):
        for seed in range(3):
            res.add({"loss": CE, "scenario": scenario}, seed, base + seed / 100)
            res.add({"loss": MSE, "scenario": scenario}, seed, base - 0.01 + seed / 50)
    [a] = analyse(load_results([tmp_path]))
    assert a.axes[-1] == "scenario" and a.levels["scenario"] == ["clean", "noisy"]
    # Each mse cell meets the cross-entropy cell of its own scenario, not one baseline for all.
    assert {(c.label, c.baseline) for c in a.comparisons} == {
        ("mse | none | none | clean", "cross_entropy | none | none | clean"),
        ("mse | none | none | noisy", "cross_entropy | none | none | noisy")}
    for c in a.comparisons:  # per seed: −0.01 + seed/100 → [−.01, 0, .01]
        assert c.test.mean_diff == pytest.approx(0.0, abs=1e-12) and c.test.n == 3
    assert [p.columns for p in a.pivots] == ["scenario"]
    effect = {e.level: e for e in a.effects["scenario"]}
    assert effect["noisy"].diff is not None and effect["noisy"].diff.mean_diff == pytest.approx(-0.20)
    assert effect["clean"].reference == "clean"
    write_report([tmp_path], plots=False)
    assert "| scenario | clean, noisy |" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_no_default_baseline_falls_back_to_the_best_cell(tmp_path: Path) -> None:
    res = ResultsDir(tmp_path)
    for seed in range(2):
        res.add({"loss": MSE}, seed, 0.80 + seed / 100)
        res.add({"loss": "focal"}, seed, 0.85 + seed / 50)
    [a] = analyse(load_results([tmp_path]))
    assert a.baseline == "focal | none | none"
    assert "compared with the best one" in (a.baseline_note or "")
    [given] = analyse(load_results([tmp_path]), baseline="mse|none|none")
    assert given.baseline == "mse | none | none" and given.comparisons[0].label == "focal | none | none"
    with pytest.raises(ReportError) as err:
        analyse(load_results([tmp_path]), baseline="msee | none | none")
    assert err.value.suggestion == "mse | none | none"


def test_lower_is_better_metric_ranks_ascending(tmp_path: Path) -> None:
    res = ResultsDir(tmp_path)
    for seed in range(3):
        res.add({"loss": CE}, seed, 0.90 + seed / 100)   # ECE (1 − acc) / 4: about 0.0225
        res.add({"loss": MSE}, seed, 0.95 + seed / 200)  # about 0.0119: better calibrated
    [a] = analyse(load_results([tmp_path]), metric="ece")
    assert list(a.ranked()["label"]) == ["mse | none | none", "cross_entropy | none | none"]
    write_report([tmp_path], plots=False, metric="ece")
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Ranked by ECE (%) (lower is better)" in text
    assert "| # | cell | ECE (%), mean [95% CI] | seeds | test acc (%) | test top-5 (%) | test NLL (nats) |" in text
    assert a.comparisons[0].test.mean_diff < 0
    assert a.comparisons[0].verdict in ("better", "no detectable difference with n=3 seeds")
    with pytest.raises(ReportError, match="no cell has the metric 'test_ac'") as err:
        analyse(load_results([tmp_path]), metric="test_ac")
    assert err.value.suggestion == "test_acc"


def test_machine_formats(tmp_path: Path) -> None:
    golden_set(tmp_path)
    [path] = write_report([tmp_path], fmt="json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    [src] = doc["sources"]
    base = next(c for c in src["cells"] if c["label"] == "cross_entropy | none | none")
    assert base["test_acc_mean"] == pytest.approx(0.905) and base["rank"] == 3
    hflip = next(c for c in src["comparisons"] if c["label"] == "cross_entropy | none | hflip")
    assert hflip["mean_diff"] == pytest.approx(0.03) and hflip["verdict"] == "better"
    assert [e["level"] for e in src["main_effects"]["augmentation"]] == ["none", "hflip"]
    [tex] = write_report([tmp_path], tmp_path / "table.tex", fmt="latex")
    latex = tex.read_text(encoding="utf-8")
    assert "cross\\_entropy & hflip & \\textbf{93.50} $\\pm$ 1.24 & 3" in latex
    assert latex.count("\\begin{tabular}") == 1 and "\\bottomrule" in latex
    [csv_path] = write_report([tmp_path], fmt="csv")
    header = csv_path.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[:4] == ["source", "rank", "label", "loss"]
    assert {"test_acc_mean", "test_acc_std", "test_acc_ci_low", "test_acc_ci_high", "n_diverged"} <= set(header)
    assert latex_escape("a_b & 5% | x") == "a\\_b \\& 5\\% \\textbar{} x"
    with pytest.raises(ReportError, match="names a .json file"):
        write_report([tmp_path], tmp_path / "x.json", fmt="csv")


def test_missing_and_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        load_results([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="holds no cell results"):
        load_results([tmp_path / "empty"])
    res = ResultsDir(tmp_path / "r")
    res.add({"loss": CE}, 0, 0.9)
    (tmp_path / "r" / "cells" / "broken.json").write_text("{not json")
    results = load_results([tmp_path / "r"])
    assert len(results.frame) == 1 and "broken.json" in results.warnings[0]


def test_cli_report_and_errors(tmp_path: Path) -> None:
    golden_set(tmp_path / "res")
    runner = CliRunner()
    ok = runner.invoke(app, ["report", str(tmp_path / "res"), "--format", "csv"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "res" / "summary.csv").exists() and "summary.csv" in ok.output
    for args, message in (
        (["report", str(tmp_path / "missing")], "does not exist"),
        (["report"], "give one or more results directories"),
        (["report", str(tmp_path / "res"), "--metric", "acc"], "no cell has the metric 'acc'"),
        (["report", str(tmp_path / "res"), "--format", "html"], "unknown report format 'html'"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, result.output


def test_run_writes_the_report_unless_told_not_to(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(
        "name: tiny\ndataset: {name: digits, train_subset: 256, test_subset: 128}\nmodel: {name: tutorial_cnn}\n"
        "train: {epochs: 1, batch_size: 64, optimizer: {name: sgd, lr: 0.05}, device: cpu}\nseeds: [0]\n"
        "grid:\n  loss: [cross_entropy, {name: mse, over: probabilities}]\n", encoding="utf-8")
    out = tmp_path / "results"
    runner = CliRunner()
    args = ["run", str(suite), "--out", str(out), "--plain", "--cache-dir", str(tmp_path / "cache")]
    first = runner.invoke(app, [*args, "--no-report"])
    assert first.exit_code == 0, first.output
    assert len(list((out / "cells").glob("*.json"))) == 2 and not (out / "report.md").exists()
    second = runner.invoke(app, args)  # both cells are done: nothing trains, the report is written
    assert second.exit_code == 0, second.output
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "# lossbench report: tiny" in text and "| cross_entropy \\| none \\| none (baseline)" in text
    assert f"report: {out / 'report.md'}" in second.output.replace("\n", "")
    # While the report is made (seconds, for the plots) the screen says so, after the closing table.
    output = second.output
    assert output.index("means over each cell's finished seeds") < output.index("writing report…") < output.index(
        "report: ")


def test_intervals_are_cut_at_the_metric_range(tmp_path: Path) -> None:
    res = ResultsDir(tmp_path)
    for seed, (base, cell) in enumerate(((0.90, 0.10), (0.95, 0.05), (0.99, 0.90))):
        res.add({"loss": CE}, seed, base)
        res.add({"loss": MSE}, seed, cell)
    write_report([tmp_path], plots=False)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    # mean 35%, t-interval [−83.49%, 153.49%] on paper: shown cut to [0, 100]; the ± keeps the spread.
    assert "| 2 | mse \\| none \\| none | 35.00 [0.00, 100.00] | 3 |" in text
    # Δ −59.67 pp, paired interval [−169.37, +50.04] on paper: a difference of accuracies cannot pass −100 pp.
    assert "| mse \\| none \\| none | -59.67 | [-100.00, +50.04] (95.0%) |" in text
    row = next(r for r in csv.DictReader(io.StringIO((tmp_path / "summary.csv").read_text(encoding="utf-8")))
               if r["label"].startswith("mse"))
    # summary.csv cuts intervals as the report does (the t-interval's −83.49% is not a possible accuracy) ...
    assert float(row["test_acc_ci_low"]) == 0.0 and float(row["test_acc_ci_high"]) == 1.0
    # ... and gives counts that are the same for every seed as a mean alone.
    header = (tmp_path / "summary.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert "epochs_run_mean" in header and not any(h.startswith("epochs_run_") and h != "epochs_run_mean"
                                                   for h in header)
