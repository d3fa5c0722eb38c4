"""report.md's sections that compare cells: pivot tables of the mean, paired comparisons with the baseline (Holm-
adjusted) and the main effects of each axis."""

from __future__ import annotations

from lossbench.analysis.stats import ALPHA, CONFIDENCE
from lossbench.report.aggregate import SourceAnalysis
from lossbench.report.markdown_table import cell_text, diff_text, p_text, table


def pivot_tables(a: SourceAnalysis) -> list[str]:
    m = a.metric
    lines: list[str] = []
    if not a.pivots:
        return ["No pivot table: the grid varies the loss alone." if len(a.levels.get("loss", [])) > 1
                else "No pivot table: the grid has a single loss and no other axis with two or more levels."]
    for p in a.pivots:
        others = [x for x in a.axes if x not in (p.rows, p.columns) and len(a.levels[x]) > 1]
        averaged = f", averaged over {', '.join(others)}" if others else ""
        lines += [f"Mean {m.heading} by {p.rows} × {p.columns}{averaged}:", ""]
        rows = [[cell_text(idx), *[m.show(v) for v in p.table.loc[idx]]] for idx in p.table.index]
        lines += table([f"{p.rows} / {p.columns}", *[str(c) for c in p.table.columns]], rows)
        lines.append("")
    return lines[:-1]


def paired_comparisons(a: SourceAnalysis) -> list[str]:
    m = a.metric
    unit = f" ({m.diff_unit})" if m.diff_unit else ""
    lines = []
    if a.baseline_note:
        lines += [f"Note: {a.baseline_note}.", ""]
    if not a.comparisons:
        return lines + ["No comparison: there is no other cell to compare with the baseline."]
    baselines = {c.baseline for c in a.comparisons}
    tested = sum(c.test.tested for c in a.comparisons)
    if len(baselines) == 1:
        lines.append(f"Baseline: `{next(iter(baselines))}`.")
    unit_text = f", in {m.diff_unit}" if m.diff_unit else ""
    delta = f"Δ = cell − baseline in {m.title}{unit_text}, paired on seed over the seeds both cells finished"
    if tested:
        lines.append(f"{delta}; two-sided p of the paired t-test, then Holm-adjusted over the {tested} tested "
                     f"comparison(s) of this table; verdict at α = {ALPHA} after Holm. The interval is Holm-adjusted "
                     "too: a paired t interval at the level of the comparison's Holm step (shown in brackets; at "
                     f"least {CONFIDENCE:.0%}), so it excludes 0 exactly when the verdict is better or worse.")
        seeds = a.source.suite_file.get("seeds")
        target = seeds.get("target") if isinstance(seeds, dict) else None
        if isinstance(target, dict) and target.get("metric", "test_acc") == m.name:
            lines[-1] += (" Adaptive seeding chose each cell's seeds by stopping on its paired interval of this "
                          "metric; the intervals and p-values here do not account for that stopping and can be "
                          "optimistic (the Adaptive seeding section's interval does: docs/adaptive-seeds.md).")
    else:
        lines.append(f"{delta}. No comparison could be tested; the verdicts say why.")
    lines.append("")
    headers = ["cell", *(["baseline"] if len(baselines) > 1 else []), f"Δ {m.title}{unit}",
               f"Holm-adjusted CI{unit}", "p", "p (Holm)", "seeds", "verdict"]
    rows = []
    for c in a.comparisons:
        diff, interval = diff_text(m, c.adjusted or c.test)
        if c.confidence is not None and interval != "—":
            interval += f" ({c.confidence:.1%})"
        rows.append([cell_text(c.label), *([cell_text(c.baseline)] if len(baselines) > 1 else []), diff, interval,
                     p_text(c.test.p), p_text(c.p_holm), c.test.n, c.verdict])
    align = ["l", *(["l"] if len(baselines) > 1 else []), "r", "r", "r", "r", "r", "l"]
    return lines + table(headers, rows, align)


def main_effects(a: SourceAnalysis) -> list[str]:
    m = a.metric
    unit = f" ({m.diff_unit})" if m.diff_unit else ""
    if not a.effects:
        return ["No main effects: no axis has two or more levels."]
    lines = [f"Each level's mean {m.heading} over its cells (every cell weighs the same, whatever the other axes) "
             "and Δ, its difference from the reference level's mean. The 95% interval pairs the two levels on seed "
             "and uses the seeds on which every cell involved finished (column seeds); where some seeds diverged or "
             "failed it need not be centred on Δ. These intervals are unadjusted: each holds at 95% on its own, not "
             "jointly."]
    if a.at_chance():
        lines[-1] += (f" Cells at chance level are left out ({', '.join(f'`{x}`' for x in a.at_chance())}): a cell "
                      "that learned nothing would pull its levels down whatever they do.")
    lines.append("")
    for axis, effects in a.effects.items():
        ref = effects[0].reference
        lines += [f"**{axis}** (reference: `{ref}`)", ""]
        rows = []
        for e in effects:
            if e.diff is None:
                diff, interval, seeds = "reference", "", ""
            else:
                diff = m.show(e.delta, signed=True)
                interval = diff_text(m, e.diff)[1]
                seeds = str(e.diff.n)
            rows.append([cell_text(e.level), e.cells, m.show(e.mean), diff, interval, seeds])
        lines += table(["level", "cells", f"mean {m.heading}", f"Δ vs reference{unit}", f"95% CI{unit}, unadjusted",
                        "seeds"],
                       rows)
        lines.append("")
    return lines[:-1]
