"""report.md's headline sentence and its Leaderboard section: cells ranked by the metric with their intervals,
cells at chance level, times measured on a loaded machine, diverged and failed cells."""

from __future__ import annotations

import pandas as pd

from lossbench.analysis.measures import measure
from lossbench.analysis.stats import ALPHA
from lossbench.report.aggregate import CHANCE_MARGIN, SourceAnalysis
from lossbench.report.markdown_table import cell_text, diff_text, mean_ci, missing, p_text, table
from lossbench.report.results import Results

#: Secondary leaderboard columns, after the ranking metric (skipped when it is the ranking metric or absent).
LEADERBOARD_COLUMNS = ("test_acc", "test_top5", "test_nll", "ece", "gap", "epoch_s", "img_per_s", "peak_mem_mb")
#: Leaderboard columns measured in time: flagged where the machine was loaded while a cell ran.
TIMING_COLUMNS = ("epoch_s", "img_per_s")
LOAD_MARK = "⚠"
ONE_SEED = ("Only one seed per cell: no confidence intervals and no significance tests, because a t-interval needs "
            "the seed-to-seed spread, which one seed cannot show. Differences below are single draws; rerun with "
            "`--seeds 0,1,2` (finished cells are kept) to measure them.")


def _seeds_cell(row: pd.Series) -> str:
    done, total = int(row["n_done"]), int(row["n_seeds"])
    if done == total:
        return str(done)
    extra = [f"{int(row[k])} {k[2:]}" for k in ("n_diverged", "n_failed") if int(row[k])]
    return f"{done}/{total} ({', '.join(extra)})"


def summary_line(a: SourceAnalysis) -> str:
    """One sentence a reader can stop at: the best cell, and whether it is told apart from its baseline — never
    stronger than the data: with fewer than two paired seeds it says that no test was possible."""
    m = a.metric
    ranked = a.ranked()
    if ranked.empty:
        return "**In short:** no cell finished, so there is nothing to rank."
    chance = a.at_chance()
    best = a.best()
    if best is None:
        return (f"**In short:** every finished cell is at chance level ({chance_text(a)}): no cell learned "
                "anything usable, so none is named best.")
    seeds = int(best["n_done"])
    head = (f"**In short:** the best cell by {m.title} is `{best['label']}` ({m.show(best[f'{m.name}_mean'])}"
            f"{' ' + m.unit if m.unit and m.unit != '%' else m.unit}, {seeds} seed{'s' if seeds != 1 else ''}"
            + (f"; {len(chance)} cell(s) at chance level left out" if chance else "") + ")")
    comparisons = a.comparisons
    if not comparisons:
        return head + ("; there is no other cell to compare it with." if a.baseline is not None
                       else "; there is no baseline to compare it with.")
    if not any(c.test.tested for c in comparisons):
        most = max(c.test.n for c in comparisons)
        if most < 2:
            return (head + f"; **no test was possible**: each comparison with the baseline rests on {most} paired "
                    "seed(s), and a paired t-test needs two or more, so the differences below are single draws. "
                    f"Run more seeds to test them: the same `lossbench run` of suite `{a.source.suite}` with "
                    "`--seeds 0,1,2` (finished cells are kept).")
        return head + "; no comparison with the baseline could be tested (the paired comparison says why)."
    baselines = list(dict.fromkeys(c.baseline for c in comparisons))
    if best["label"] in baselines:
        own = [c for c in comparisons if c.baseline == best["label"]]
        tested = [c for c in own if c.test.tested]
        worse = sum(c.verdict == "worse" for c in tested)
        which = "the baseline" if len(baselines) == 1 else "a baseline (of the cells that share its other axes)"
        text = (f", which is {which}; {worse} of the {len(tested)} cell(s) tested against it "
                f"{'is' if len(tested) == 1 else 'are'} detectably worse (paired t-test, Holm-adjusted, α = {ALPHA})")
        if len(own) > len(tested):
            text += f"; {len(own) - len(tested)} could not be tested (too few paired seeds)"
        return head + text + "."
    comparison = next((c for c in comparisons if c.label == best["label"]), None)
    if comparison is None:
        return head + "; it was not compared with a baseline."
    base = comparison.baseline
    diff, interval = diff_text(m, comparison.adjusted or comparison.test)
    unit = f" {m.diff_unit}" if m.diff_unit else ""
    level = f"{comparison.confidence:.1%} Holm-adjusted CI" if comparison.confidence else "CI"
    evidence = f"Δ {diff}{unit}" + (f", {level} {interval}" if interval != "—" else "") + (
        f", p (Holm) {p_text(comparison.p_holm)}" if comparison.p_holm is not None else "")
    if comparison.verdict in ("better", "worse"):
        reading = f"it is detectably {comparison.verdict} than the baseline `{base}`"
    elif comparison.verdict.startswith("no detectable"):
        reading = f"it is **not distinguishable** from the baseline `{base}` with {comparison.test.n} paired seeds"
    else:
        reading = f"against the baseline `{base}`: {comparison.verdict}"
    return f"{head}; {reading} ({evidence})."


def leaderboard_section(a: SourceAnalysis, results: Results) -> list[str]:
    m = a.metric
    summary = a.summary
    extra = [measure(c) for c in LEADERBOARD_COLUMNS if c != m.name and f"{c}_mean" in summary.columns]
    loaded = _loaded_seeds(a, results)
    chance = set(a.at_chance())
    headers = ["#", "cell", f"{m.heading}, mean [95% CI]", "seeds", *[x.heading for x in extra]]
    rows = []
    for _, row in a.ranked().iterrows():
        name = cell_text(row["label"]) + (" (baseline)" if row["label"] == a.baseline else "") + (
            " ✗ at chance" if row["label"] in chance else "")
        flag = f" {LOAD_MARK}" if row["label"] in loaded else ""
        rows.append([int(row["rank"]), name, mean_ci(m, row), _seeds_cell(row),
                     *[x.show(row[f"{x.name}_mean"]) + (flag if x.name in TIMING_COLUMNS else "") for x in extra]])
    lines = [f"Ranked by {m.heading} ({'higher' if m.higher_is_better is not False else 'lower'} is better). "
             "In brackets the 95% t-interval of the mean over seeds (n−1 degrees of freedom); the other columns are "
             "means over the same seeds. Gap = clean training accuracy − test accuracy (overfitting). Seconds per epoch "
             "count the training and the evaluation after the epoch (averaged over the epochs, evaluated or not)."
             + (" Intervals are cut at the metric's possible range." if m.bounds else "")]
    if m.higher_is_better is None:
        lines.append(f"(Whether higher or lower `{m.name}` is better is not known to lossbench; ranked high to low.)")
    if a.max_seeds == 1:
        lines += ["", f"> {ONE_SEED}"]
    lines.append("")
    lines += table(headers, rows, ["r", "l", "r", "r"] + ["r"] * len(extra)) if rows else [
        "No cell finished: nothing to rank."]
    if chance:
        lines += ["", f"✗ At chance: {len(chance)} cell(s) have a {chance_text(a)}: they learned nothing usable. "
                      "They stay ranked here, but the headline's best cell and the main effects leave them out."]
    if loaded and any(x.name in TIMING_COLUMNS for x in extra):
        worst = max(load for seeds in loaded.values() for _, load, _ in seeds)
        lines += ["", f"{LOAD_MARK} Times measured on a loaded machine: while {len(loaded)} of these cells ran, the "
                      f"1-minute load average (up to {worst:.1f}) exceeded the cores the run could use, so their "
                      "time per epoch and throughput are inflated by waiting and do not compare with the others "
                      "(see *Machine load* under Setup)."]
    lines += ["", "**Diverged and failed cells** (never hidden; their seeds are left out of every statistic):", ""]
    if a.unranked.empty:
        lines.append("None: every cell finished.")
    else:
        bad = []
        for _, r in a.unranked.iterrows():
            when = f"epoch {int(r['diverged_epoch'])}" if not missing(r["diverged_epoch"]) else "—"
            bad.append([cell_text(r["label"]), int(r["seed"]), r["status"], when, cell_text(r["error"] or "—"),
                        f"`{r['id']}`"])
        lines += table(["cell", "seed", "status", "when", "error", "cell id"], bad,
                       ["l", "r", "l", "l", "l", "l"])
    return lines


def chance_text(a: SourceAnalysis) -> str:
    """`within 2 points of chance, 1/10 = 10.00%`."""
    chance = a.chance
    where = f", 1/{round(1 / chance)} = {chance * 100:.2f}%" if chance else ""
    return f"test accuracy within {CHANCE_MARGIN * 100:g} points of chance{where}"


def _loaded_seeds(a: SourceAnalysis, results: Results) -> dict[str, list[tuple[int, float, int]]]:
    """Per cell label, the done seeds that ran while the load average exceeded the usable cores:
    (seed, highest load seen at the seed's start or end, cores)."""
    out: dict[str, list[tuple[int, float, int]]] = {}
    done = a.rows[a.rows["status"] == "done"].sort_values("seed")
    for rid, label, seed in zip(done["id"], done["label"], done["seed"]):
        load = results.records[rid].load
        worst = load.overloaded()
        if worst is not None:
            out.setdefault(label, []).append((int(seed), worst, int(load.cores or 0)))
    return out
