"""What a reader of the report needs at a glance: the one-line summary, dataset sizes and where the results are,
every seed's value with outliers marked, one interval column, timing flagged on a loaded machine, reliability
diagrams with their bin counts, and a LaTeX table with one column per axis and the best values in bold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lossbench.report import analyse, load_results, write_report
from lossbench.report import plots as report_plots

from test_report import CE, MSE, ResultsDir, golden_set


def _report(root: Path) -> str:
    write_report([root], plots=False)
    return (root / "report.md").read_text(encoding="utf-8")


def test_summary_line_names_the_best_cell_and_its_paired_test_against_the_baseline(tmp_path: Path) -> None:
    root = tmp_path / "results"
    golden_set(root)
    first = _report(root).split("\n## Setup")[0]
    # Best: cross_entropy | none | hflip, 93.00/93.50/94.00 against the baseline's 90.00/91.00/90.50, paired on seed.
    best, base = np.array([0.930, 0.935, 0.940]), np.array([0.900, 0.910, 0.905])
    diff = (best - base) * 100
    # It is the smallest of 3 p-values: Holm tests it at α/3, so its interval is the 1 − 0.05/3 = 98.3% one.
    half = stats.t.ppf(1 - 0.05 / 6, 2) * diff.std(ddof=1) / np.sqrt(3)
    assert "the best cell by test acc is `cross_entropy | none | hflip` (93.50%, 3 seeds)" in first
    assert (f"Δ +{diff.mean():.2f} pp, 98.3% Holm-adjusted CI [+{diff.mean() - half:.2f}, "
            f"+{diff.mean() + half:.2f}]") in first
    assert "detectably better than the baseline `cross_entropy | none | none`" in first
    assert stats.ttest_rel(best, base).pvalue < 0.05


def test_summary_line_when_the_best_is_not_distinguishable(tmp_path: Path) -> None:
    root = tmp_path / "results"
    res = ResultsDir(root)
    for seed, (a, b) in enumerate([(0.90, 0.92), (0.92, 0.915), (0.91, 0.915)]):
        res.add({"loss": CE}, seed, a)
        res.add({"loss": MSE}, seed, b)
    first = _report(root).split("\n## Setup")[0]
    assert "`mse | none | none`" in first and "**not distinguishable** from the baseline" in first
    assert "with 3 paired seeds" in first


def test_setup_shows_data_sizes_learning_rate_load_and_where_the_results_are(tmp_path: Path) -> None:
    root = tmp_path / "results"
    golden_set(root)
    text = _report(root)
    assert "| data | train 1,437 · val 0 · test 360 images · 10 classes · 1×8×8 (channels×height×width) |" in text
    assert "| learning rate | 0.05 after epoch 1 → 0.05 after epoch 3 |" in text
    assert "1 of 12 cell files ran with the load above the cores" in text
    assert "`results/` — the folder of this report" in text
    elsewhere = tmp_path / "paper"
    write_report([root], elsewhere, plots=False)
    assert "`../results` (relative to this report)" in (elsewhere / "report.md").read_text(encoding="utf-8")


def test_one_interval_column_and_top5(tmp_path: Path) -> None:
    root = tmp_path / "results"
    golden_set(root)
    header = next(line for line in _report(root).splitlines() if line.startswith("| # | cell"))
    assert header.count("CI") == 1 and "test top-5 (%)" in header


def test_timing_is_flagged_only_for_the_cell_that_ran_on_a_loaded_machine(tmp_path: Path) -> None:
    root = tmp_path / "results"
    golden_set(root)  # mse | none | hflip seed 1 ran at a load of 3.5-3.75 on 2 cores
    rows = {line.split(" | ")[1]: line for line in _report(root).splitlines() if line.startswith("| ") and
            line.split(" | ")[0] in ("| 1", "| 2", "| 3", "| 4")}
    flagged = [label for label, line in rows.items() if "⚠" in line]
    assert flagged == ["mse \\| none \\| hflip"]
    assert rows["mse \\| none \\| hflip"].count("⚠") == 2  # time per epoch and throughput, nothing else


def test_per_seed_table_marks_the_outlying_seed(tmp_path: Path) -> None:
    root = tmp_path / "results"
    res = ResultsDir(root)
    accs = {(CE, "none"): [0.980, 0.985, 0.975], (CE, "hflip"): [0.970, 0.978, 0.974],
            (MSE, "none"): [0.982, 0.976, 0.979], (MSE, "hflip"): [0.938, 0.972, 0.665]}
    for (loss, aug), values in accs.items():
        for seed, acc in enumerate(values):
            res.add({"loss": loss, "augmentation": aug}, seed, acc)
    section = _report(root).split("## Every seed (test acc)")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| mse \\| none \\| hflip"))
    assert row == "| mse \\| none \\| hflip | 93.80 | 97.20 | **66.50** ⚠ | 30.70 |"
    assert section.count("⚠") == 2 and "1 here" in section  # the explanation and the one outlier
    # The typical spread: 1.4826 × the median absolute deviation from each cell's median, over all 12 seeds.
    values = np.array(list(accs.values())) * 100
    scale = 1.4826 * np.median(np.abs(values - np.median(values, axis=1, keepdims=True)))
    assert f"5 × {scale:.2f} pp" in section


def test_latex_has_one_column_per_axis_and_bold_best_values(tmp_path: Path) -> None:
    root = tmp_path / "results"
    golden_set(root)
    write_report([root], root / "table.tex", fmt="latex")
    tex = (root / "table.tex").read_text(encoding="utf-8")
    assert "\\# & Loss & Augmentation & test acc (\\%) & Seeds" in tex
    assert "\\textbar" not in tex.split("\\midrule")[1]  # the axes are columns, not one joined label
    best_row = next(line for line in tex.splitlines() if line.startswith("1 & "))
    assert best_row.startswith("1 & cross\\_entropy & hflip & \\textbf{93.50} $\\pm$ 1.24 & 3")
    assert "Every cell: regularizer none; optimizer sgd(lr=0.05)." in tex
    # Compact by default: the axes, the metric with its interval, seeds and ECE; nothing about time or memory.
    assert best_row.count(" & ") == 5 and "MiB" not in tex and "s)" not in tex
    wide = write_report([root], root / "wide.tex", fmt="latex", columns="test_nll,epoch_s,peak_mem_mb")[0]
    tex = wide.read_text(encoding="utf-8")
    nll_bold = [line.split(" & ")[0] for line in tex.splitlines() if "\\textbf{0.130}" in line]
    # The lowest NLL is bold: its interval's upper end, 2 × (1 − 0.9226) = 0.1548, is below the runner-up's 0.155.
    assert nll_bold == ["1"]
    assert "\\textbf{512}" not in tex and tex.count("\\textbf") == 2  # memory and time are never bold
    loaded_row = next(line for line in tex.splitlines() if line.startswith("2 & mse"))
    assert "$^\\dagger$" in loaded_row and "load exceeded its cores" in tex
    assert all("$^\\dagger$" not in line for line in tex.splitlines() if line.startswith(("1 & ", "3 & ", "4 & ")))


def test_latex_bold_needs_a_lead_beyond_the_interval(tmp_path: Path) -> None:
    root = tmp_path / "results"
    res = ResultsDir(root)
    for loss, accs in (("cross_entropy", [0.90, 0.95, 0.92]), ("mse", [0.91, 0.93, 0.91])):
        for seed, acc in enumerate(accs):
            res.add({"loss": loss}, seed, acc)
    [tex] = write_report([root], root / "t.tex", fmt="latex")
    assert "\\textbf" not in tex.read_text()  # 92.33 ± 6.3 does not leave out 91.67
    from typer.testing import CliRunner

    from lossbench.cli import app

    bad = CliRunner().invoke(app, ["report", str(root), "--format", "latex", "--columns", "ece,test_nl"])
    assert bad.exit_code == 2 and "test_nll" in bad.output and "test_nl'" in bad.output


def test_reliability_diagram_shows_every_bin_count_and_marks_empty_bins(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "results"
    golden_set(root)
    figures = []
    monkeypatch.setattr(report_plots, "save_png", lambda fig, path: figures.append(fig))
    results = load_results([root])
    analysis = analyse(results, "test_acc", None)[0]
    plot = report_plots._reliability(analysis, results.records, root, "plots")
    assert plot is not None and "counts them per bin" in plot.caption
    fig = figures[0]
    diagrams, count_panels = fig.axes[:3], fig.axes[3:6]
    # Every cell's bins are [0, 20, 180] per seed; the best cell has 3 done seeds: pooled 0, 60, 540.
    assert [t.get_text() for t in count_panels[0].texts] == ["0", "60", "540"]
    hatched = [p for p in diagrams[0].patches if p.get_hatch()]
    assert len(hatched) == 1  # the empty bin, drawn as such rather than as a 0 % accuracy bar
    filled = [p for p in diagrams[0].patches if not p.get_hatch()]
    alphas = sorted(p.get_facecolor()[3] for p in filled)
    assert alphas[0] == pytest.approx(0.12 + 0.88 * 60 / 540) and alphas[1] == pytest.approx(1.0)
