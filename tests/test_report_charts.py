"""Honest charts: every cell on a dot-and-interval plot whose scale an outlier cannot flatten, cells without a
result marked, confusion matrices with class names, reliability panels on one scale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lossbench.record import Reliability
from lossbench.report import dot_plot, plots, write_report
from lossbench.report.dot_plot import _outlier_edge

from test_report import ResultsDir


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The matplotlib figures the report draws, by file name, instead of PNG files."""
    drawn: dict[str, Any] = {}
    for module in (plots, dot_plot):
        monkeypatch.setattr(module, "save_png", lambda fig, path: drawn.__setitem__(Path(path).name, fig))
    return drawn


def _grid(root: Path, outlier: bool = True) -> ResultsDir:
    res = ResultsDir(root)
    numbers = {"cross_entropy": [0.97, 0.975, 0.98], "mse": [0.965, 0.97, 0.975], "focal": [0.96, 0.962, 0.968],
               "poly": [0.955, 0.96, 0.958], "bad": [0.50, 0.52, 0.51] if outlier else [0.95, 0.951, 0.952]}
    for loss, accs in numbers.items():
        for seed, acc in enumerate(accs):
            res.add({"loss": loss}, seed, acc)
    for seed in range(3):
        res.add({"loss": "broken"}, seed, None, status="failed")
    return res


def test_outlier_edge() -> None:
    # Quartiles 95.5 and 96.5 (numpy's linear rule over the 5 values): the break is 3 × 1.0 below 95.5.
    assert _outlier_edge(np.array([97.0, 96.5, 96.0, 95.5, 51.0]), True) == pytest.approx(95.5 - 3 * 1.0)
    assert _outlier_edge(np.array([97.0, 96.5, 96.0, 95.5]), True) is None
    assert _outlier_edge(np.array([0.2, 0.21, 0.22, 0.23, 0.9]), False) is not None  # lower is better: high is bad
    assert _outlier_edge(np.array([1.0, 2.0, 3.0]), True) is None  # too few cells to call one an outlier


def test_every_cell_is_shown_and_an_outlier_does_not_set_the_scale(tmp_path: Path, figures: dict) -> None:
    _grid(tmp_path)
    write_report([tmp_path])
    ax = figures["test_acc_bars.png"].axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 6 and "broken | none | none" in labels  # every cell, the failed one too
    texts = [t.get_text() for t in ax.texts]
    assert any("no result" in t for t in texts)
    assert any(t.startswith("51.00") and "axis break" in t for t in texts)
    low, high = ax.get_xlim()
    # The four good cells (95.5–98.2%) fill the axis: it does not stretch down to the outlier's 51%.
    assert low > 90 and high <= 100.5
    assert all(t >= 94 for t in ax.get_xticks())  # no tick measures the far-off cell
    text = (tmp_path / "report.md").read_text()
    assert "Mean test acc (%) of all 6 cells" in text and "drawn at the axis break" in text


def test_without_an_outlier_the_axis_spans_every_value(tmp_path: Path, figures: dict) -> None:
    _grid(tmp_path, outlier=False)
    write_report([tmp_path])
    ax = figures["test_acc_bars.png"].axes[0]
    assert ax.get_xlim()[0] < 95.0 and not any("axis break" in t.get_text() for t in ax.texts)


def test_confusion_matrix_uses_class_names_and_reliability_panels_share_a_scale(tmp_path: Path,
                                                                                figures: dict) -> None:
    res = ResultsDir(tmp_path)
    for loss, acc in (("cross_entropy", 0.9), ("mse", 0.8)):
        for seed in range(2):
            record = res.add({"loss": loss}, seed, acc + seed * 0.01)
            record.data.class_names = ["cat", "dog"]
            if loss == "mse":  # fewer predictions per bin: on its own scale its bars would look alike
                record.metrics.reliability = Reliability(count=[0.0, 2.0, 18.0], confidence=[0.0, 0.5, 0.95],
                                                         accuracy=[0.0, 0.45, record.metrics.test_acc])
            res.write(record)
    write_report([tmp_path])
    confusion = figures["confusion_best.png"].axes[0]
    assert [t.get_text() for t in confusion.get_xticklabels()] == ["cat", "dog"]
    assert [t.get_text() for t in confusion.get_yticklabels()] == ["cat", "dog"]
    panels = figures["reliability.png"].axes
    count_rows = [ax for ax in panels if ax.get_yscale() == "log"]
    assert len(count_rows) == 2 and count_rows[0].get_ylim() == count_rows[1].get_ylim()


def test_a_large_grid_names_the_best_and_worst_cells_and_counts_every_cell(tmp_path: Path, figures: dict) -> None:
    """Past DOT_PLOT_ROWS cells the dot plot stays readable: the best and worst cells by name, the baseline, a gap
    row saying how many are not named, and a histogram over the same axis that counts every cell."""
    res = ResultsDir(tmp_path)
    n = dot_plot.DOT_PLOT_ROWS + 40
    for i in range(n):
        loss = "cross_entropy" if i == 70 else f"loss{i:03d}"  # the baseline ranks in the middle
        for seed in range(2):
            res.add({"loss": loss}, seed, 0.5 + 0.4 * (n - i) / n + 0.001 * seed)
    for seed in range(2):
        res.add({"loss": "broken"}, seed, None, status="failed")
    write_report([tmp_path])
    fig = figures["test_acc_bars.png"]
    hist_ax, ax = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    named = dot_plot.DOT_PLOT_BEST + dot_plot.DOT_PLOT_WORST + 1 + 1  # + the baseline + the failed cell
    assert len(labels) == named and "cross_entropy | none | none (baseline)" in labels
    assert "broken | none | none" in labels and "loss000 | none | none" in labels
    hidden = n - dot_plot.DOT_PLOT_BEST - dot_plot.DOT_PLOT_WORST - 1
    assert any(t.get_text().startswith(f"… {hidden} more cells ranked between") for t in ax.texts)
    counted = sum(p.get_height() for p in hist_ax.patches)
    assert counted == n  # every cell with a result, in the histogram
    assert hist_ax.get_xlim() == ax.get_xlim()
    text = (tmp_path / "report.md").read_text()
    assert f"only the best {dot_plot.DOT_PLOT_BEST} and the worst {dot_plot.DOT_PLOT_WORST} are named" in text
