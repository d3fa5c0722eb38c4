"""The report's "Under shift" and "Out of distribution" sections, from the `shift` block of cell records
(lossbench/shift/evaluate.py): accuracy and ECE against corruption severity with seed bands, the mean corruption
error (mCE) relative to the baseline cell, and AUROC / FPR95 of the max-softmax and energy scores per OOD source.

Every number is compared on the corruptions × severities (and OOD sources) that every finished cell of the source
was scored on, so cells evaluated by different `evaluate:` blocks are never averaged over different sets.

mCE (Hendrycks & Dietterich 2019) with the baseline cell in AlexNet's place, paired on the seed: for each seed,
CE_c = Σ_s E(cell, c, s) / Σ_s E(baseline, c, s) over the severities s of corruption c, with E the top-1 error;
mCE = the mean of CE_c over the corruptions; 100 % is the baseline's robustness, below is more robust. The
interval is the t-interval of the per-seed mCE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lossbench.analysis.stats import t_interval
from lossbench.record import CellRecord, OodScore, ShiftBlock, ShiftScore
from lossbench.report.aggregate import SourceAnalysis
from lossbench.report.figure import Plot, palette, save_png, seeds_text
from lossbench.report.markdown_table import cell_text, table
from lossbench.report.plots import CURVE_CELLS

#: OOD metrics of a source, in table order: (the score's figure, heading, higher is better).
OOD_COLUMNS: tuple[tuple[Callable[[OodScore], float | None], str, bool], ...] = (
    (lambda s: s.auroc_msp, "AUROC MSP (%)", True), (lambda s: s.fpr95_msp, "FPR95 MSP (%)", False),
    (lambda s: s.auroc_energy, "AUROC energy (%)", True), (lambda s: s.fpr95_energy, "FPR95 energy (%)", False))
#: One figure of a clean or corrupted score: its accuracy, NLL or ECE.
ScoreReading = Callable[[ShiftScore], float | None]


def _accuracy(score: ShiftScore) -> float | None:
    return score.acc


def _ece(score: ShiftScore) -> float | None:
    return score.ece


@dataclass
class ShiftData:
    """The shift blocks of a source's done cells: {label: {seed: block}}, and the corruptions, severities and OOD
    sources every one of them has."""

    blocks: dict[str, dict[int, ShiftBlock]]
    corruptions: list[str]
    severities: list[str]
    ood: list[str]


def shift_data(analysis: SourceAnalysis, records: dict[str, CellRecord]) -> ShiftData | None:
    """The source's shift blocks, or None when no done cell has one."""
    rows = analysis.rows[analysis.rows["status"] == "done"].sort_values("order")
    blocks: dict[str, dict[int, ShiftBlock]] = {}
    for rid in rows["id"]:
        record = records[rid]
        block = record.metrics.shift
        if isinstance(block, ShiftBlock):
            blocks.setdefault(record.label, {})[record.seed] = block
    if not blocks:
        return None
    every = [b for per in blocks.values() for b in per.values()]
    corruptions = [c for c in every[0].corruptions or {} if all(c in (b.corruptions or {}) for b in every)]
    severities = sorted({s for c in corruptions for s in every[0].corruptions[c]}, key=int)
    severities = [s for s in severities if all(s in b.corruptions[c] for b in every for c in corruptions)]
    ood = [o for o in every[0].ood or {} if all(o in (b.ood or {}) for b in every)]
    return ShiftData(blocks, corruptions, severities, ood)


def _order(analysis: SourceAnalysis, data: ShiftData) -> list[str]:
    """Labels in the source's ranking order (the leaderboard's), those without a shift block left out."""
    ranked = [label for label in analysis.summary.sort_values("rank")["label"] if label in data.blocks]
    return ranked + [label for label in data.blocks if label not in ranked]


def _corrupted(block: ShiftBlock, data: ShiftData, figure: ScoreReading, severity: str | None = None) -> float:
    """Mean of `figure` (accuracy, NLL, ECE) over the shared corruptions, at one severity or over all of them."""
    severities = [severity] if severity is not None else data.severities
    values = [figure(block.corruptions[c][s]) for c in data.corruptions for s in severities]
    return float(np.mean(values))


def _pct(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _mean_ci(values: list[float], bounds: tuple[float, float] = (0.0, 1.0)) -> str:
    """`81.05 [78.10, 84.00]` in percent: mean over seeds and its 95 % t-interval (just the mean for one seed),
    the interval cut at the metric's possible range."""
    interval = t_interval(values)
    if interval.low is None:
        return _pct(interval.mean)
    low, high = max(interval.low, bounds[0]), min(interval.high, bounds[1])
    return f"{_pct(interval.mean)} [{_pct(low)}, {_pct(high)}]"


def mce_per_seed(cell: dict[int, ShiftBlock], baseline: dict[int, ShiftBlock],
                 data: ShiftData) -> tuple[list[float], dict[str, list[float]]]:
    """Per seed shared with the baseline: mCE, and CE of each corruption (fractions; 1.0 = the baseline)."""
    mces: list[float] = []
    per_corruption: dict[str, list[float]] = {c: [] for c in data.corruptions}
    for seed in sorted(set(cell) & set(baseline)):
        ces = {}
        for c in data.corruptions:
            err = sum(1 - cell[seed].corruptions[c][s].acc for s in data.severities)
            base = sum(1 - baseline[seed].corruptions[c][s].acc for s in data.severities)
            if base > 0:  # a baseline without a single error under c leaves its CE undefined
                ces[c] = err / base
                per_corruption[c].append(ces[c])
        if ces:
            mces.append(float(np.mean(list(ces.values()))))
    return mces, per_corruption


def under_shift_section(analysis: SourceAnalysis, records: dict[str, CellRecord], plots: list[Plot]) -> list[str]:
    """The "Under shift" section: the figure, the accuracy/ECE/mCE table and CE per corruption."""
    data = shift_data(analysis, records)
    assert data is not None and data.corruptions
    labels = _order(analysis, data)
    lines = [f"Each cell scored on its test split corrupted by {len(data.corruptions)} corruption(s) "
             f"({', '.join(data.corruptions)}) at severities {', '.join(data.severities)} (Hendrycks & Dietterich "
             "2019; parameters of the `imagecorruptions` package). Corrupted accuracy and ECE are means over "
             "every corruption × severity; mean [95% CI] over seeds. Paired tests against the baseline on "
             "these: `lossbench report DIR --metric corrupt_acc` (or corrupt_ece, corrupt_nll).", ""]
    for p in plots:
        lines += [f"![{p.title}]({p.path})", "", f"*{p.caption}*", ""]
    base = analysis.baseline if analysis.baseline in data.blocks else None
    rows = []
    for label in labels:
        per_seed = data.blocks[label]
        clean = [b.clean.acc for b in per_seed.values()]
        acc = [_corrupted(b, data, _accuracy) for b in per_seed.values()]
        ece = [_corrupted(b, data, _ece) for b in per_seed.values()]
        mce = "—"
        if label == base:
            mce = "100 (reference)"
        elif base is not None:
            mces, _ = mce_per_seed(per_seed, data.blocks[base], data)
            mce = _mean_ci(mces, (0.0, math.inf)) if mces else "—"
        name = label + (" (baseline)" if label == base else "")
        rows.append([cell_text(name), str(len(per_seed)), _mean_ci(clean), _mean_ci(acc), _mean_ci(ece), mce])
    lines += table(["cell", "seeds", "clean acc (%)", "corrupted acc (%)", "corrupted ECE (%)",
                    "mCE (%, baseline = 100)"], rows)
    if base is None:
        lines += ["", "No mCE: the source has no baseline cell with shift results (`--baseline LABEL`)."]
        return lines
    lines += ["", f"mCE: per seed, CE of a corruption = Σ over severities of the cell's top-1 error / the same sum "
                  f"for the baseline `{base}` on that seed; mCE = mean over corruptions; below 100 is more robust "
                  "than the baseline. CE per corruption (mean over seeds):", ""]
    ce_rows = []
    for label in labels:
        _, per_corruption = mce_per_seed(data.blocks[label], data.blocks[base], data)
        ce_rows.append([cell_text(label), *(_pct(float(np.mean(v))) if v else "—" for v in per_corruption.values())])
    lines += table(["cell", *data.corruptions], ce_rows)
    return lines


def ood_section(analysis: SourceAnalysis, records: dict[str, CellRecord]) -> list[str]:
    """The "Out of distribution" section: AUROC / FPR95 of MSP and energy per cell and OOD source."""
    data = shift_data(analysis, records)
    assert data is not None and data.ood
    lines = ["The in-distribution test split is the positive class; the score is the maximum softmax "
             "probability (MSP, Hendrycks & Gimpel 2017) or the energy score logsumexp of the logits (Liu et al. "
             "2020). AUROC: higher is better (50 = chance); FPR95: the fraction of OOD inputs accepted at the "
             "threshold that keeps 95 % of the test split, lower is better. Mean [95% CI] over seeds. Paired tests "
             "against the baseline on the means over OOD sources: `lossbench report DIR --metric ood_auroc_msp` "
             "(or ood_fpr95_msp, ood_auroc_energy, ood_fpr95_energy).", ""]
    rows = []
    for source in data.ood:
        for label in _order(analysis, data):
            blocks = list(data.blocks[label].values())
            rows.append([source, cell_text(label), str(len(blocks)),
                         *(_mean_ci([figure(b.ood[source]) for b in blocks]) for figure, _, _ in OOD_COLUMNS)])
    lines += table(["OOD source", "cell", "seeds", *(h for _, h, _ in OOD_COLUMNS)], rows,
                   align=["l", "l", "r", "r", "r", "r", "r"])
    return lines


def sections(analysis: SourceAnalysis, records: dict[str, CellRecord],
             plots: list[Plot]) -> list[tuple[str, list[str]]]:
    """The report sections the source's results allow: "Under shift", "Out of distribution", or none."""
    data = shift_data(analysis, records)
    if data is None:
        return []
    out = []
    if data.corruptions and data.severities:
        out.append(("Under shift", under_shift_section(analysis, records, plots)))
    if data.ood:
        out.append(("Out of distribution", ood_section(analysis, records)))
    return out


def make_plots(analysis: SourceAnalysis, records: dict[str, CellRecord], out_dir: Path, subdir: str) -> list[Plot]:
    """Accuracy and ECE against severity (0 = clean), one line per cell with a band over seeds."""
    data = shift_data(analysis, records)
    if data is None or not data.corruptions or not data.severities:
        return []
    labels = _order(analysis, data)
    base = analysis.baseline if analysis.baseline in data.blocks else None
    shown = labels[:CURVE_CELLS] + ([base] if base is not None and base not in labels[:CURVE_CELLS] else [])
    x = [0, *(int(s) for s in data.severities)]
    fig = Figure(figsize=(11, 4.6))
    ax_acc, ax_ece = fig.subplots(1, 2)
    handles = []
    for label, color in zip(shown, palette(len(shown))):
        blocks = [data.blocks[label][seed] for seed in sorted(data.blocks[label])]
        for ax, figure in ((ax_acc, _accuracy), (ax_ece, _ece)):
            values = np.array([[figure(b.clean), *(_corrupted(b, data, figure, s) for s in data.severities)]
                               for b in blocks]) * 100
            style = "--" if label == base else "-"
            (line,) = ax.plot(x, values.mean(0), style, color=color, lw=1.8, marker="o", ms=3,
                              label=label + (" (baseline)" if label == base else ""))
            if len(blocks) > 1:
                ax.fill_between(x, values.min(0), values.max(0), color=color, alpha=0.15, lw=0)
            if ax is ax_acc:
                handles.append(line)
    ax_acc.set(xlabel="severity (0 = clean test split)", ylabel="accuracy (%)",
               title="Accuracy under corruption")
    ax_ece.set(xlabel="severity (0 = clean test split)", ylabel="ECE (%)", title="Calibration error under corruption")
    for ax in (ax_acc, ax_ece):
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    seeds = analysis.max_seeds
    band = "; band: min–max over seeds" if seeds > 1 else ""
    fig.suptitle(f"Under shift — {analysis.source.name} (mean over {len(data.corruptions)} corruption(s) and up to "
                 f"{seeds_text(seeds)}{band})")
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.045 * ((len(handles) + 1) // 2)))
    fig.tight_layout()
    path = f"{subdir}/under_shift.png"
    save_png(fig, out_dir / path)
    return [Plot(path, "Under shift", f"Accuracy and ECE of {len(shown)} cell(s) on the clean test split "
                 f"(severity 0) and averaged over {', '.join(data.corruptions)} at each severity"
                 + ("; the baseline dashed." if base is not None else "."))]
