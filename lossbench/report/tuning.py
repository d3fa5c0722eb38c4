"""The report's "Tuning" section: how each cell's recipe was chosen before its verdict, and whether the search
was wide and long enough to trust; the caveat under the headline, and the tuning block of report.json."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lossbench.report.aggregate import SourceAnalysis
from lossbench.report.markdown_table import cell_text, table
from lossbench.report.figure import Plot
from lossbench.report.tuning_study import (
    EDGE_SHARE,
    RISE_SHARE,
    RISE_WINDOW,
    EdgeWarning,
    Study,
    edge_warnings,
    number_text,
    plain_value,
    short_names,
)


TRIAL_STATES = ("complete", "pruned", "failed")


def _seeds(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds) if seeds else "—"


def _protocol(study: Study) -> str:
    m, data = study.metric, study.data
    n = len(study.cells)
    sampler = f"the {study.sampler} sampler" + (f" (seed {study.sampler_seed})" if study.sampler_seed is not None
                                               else "")
    pruner = ("no pruning (every trial trains all its epochs)" if study.pruner == "none"
              else f"the {study.pruner} pruner (epochs as the resource: a trial reports {m.name} after each epoch "
                   "and stops when it trails)")
    budget = f"{study.budget} trials" if study.budget is not None else "an unrecorded number of trials"
    cells = f"Each of the {n} cells" if n != 1 else "The one cell"
    goal = "maximising" if study.higher else "minimising"
    text = (f"{cells} was tuned on its own with the same budget: {budget} drawn by {sampler}, {pruner}, {goal} "
            f"{m.title} (`{m.name}`).")
    if data:
        text += (f" Trials trained on {int(data.train or 0):,} images and were scored on the "
                 f"{int(data.val or 0):,} images of the validation split; the test split was not read.")
    text += f" Tuning seeds: {_seeds(study.tuning_seeds)}."
    text += (f" Then each cell's chosen configuration was trained anew on the verdict seeds "
             f"{_seeds(study.verdict_seeds)}" + (f" and measured on the {int(data.test):,} test images"
                                                  if data.test else "")
             + ": the leaderboard, the paired comparisons and every other section rank those final cells.")
    overlap = sorted(set(study.tuning_seeds) & set(study.verdict_seeds))
    if overlap:
        text += (f" **Warning: seed(s) {_seeds(overlap)} served both tuning and the verdict**, so the verdict is "
                 "not measured on fresh training runs.")
    spent = sum(c.epochs for c in study.cells)
    if spent:
        text += f" Tuning cost {spent:,} epochs in all"
        if study.budget and study.epochs_per_trial:
            full = study.budget * int(study.epochs_per_trial) * n
            text += (f", {spent / full:.0%} of the {full:,} that {study.budget} trials × {study.epochs_per_trial} "
                     f"epochs × {n} cells would cost without pruning")
        counts = {s: sum(c.count(s) for c in study.cells) for s in TRIAL_STATES}
        text += "; trials: " + ", ".join(f"{v} {s}" for s, v in counts.items()) + "."
    return text


def _space_table(study: Study) -> list[str]:
    names = short_names([c.label for c in study.cells])
    rows = []
    for path in study.paths:
        users = [c for c in study.cells if path in c.params or (
            path in c.trials and c.trials[path].notna().any())]
        rng = study.space.get(path)
        every = f"all {len(study.cells)}" if len(study.cells) > 1 else "the one cell"
        who = (every if len(users) == len(study.cells)
               else ", ".join(f"`{cell_text(names[c.label])}`" for c in users) or "none")
        rows.append([f"`{path}`", cell_text(rng.describe()) if rng else "— (not in suite.yaml)", who])
    return table(["parameter", "range", "cells that tune it"], rows, ["l", "l", "l"])


def _best_table(study: Study, warnings: list[EdgeWarning]) -> list[str]:
    m = study.metric
    flagged = {(w.label, w.path) for w in warnings}
    rows = []
    for cell in study.cells:
        values = []
        for path in study.paths:
            if path not in cell.params:
                values.append("—")
            else:
                values.append(number_text(cell.params[path]) + (" ⚠" if (cell.label, path) in flagged else ""))
        trials = f"{cell.count('complete')}/{cell.count('pruned')}/{cell.count('failed')}"
        chosen = "—" if cell.chosen_trial is None else str(cell.chosen_trial)
        rows.append([cell_text(cell.label), *values, m.show(cell.chosen_value), chosen, trials, f"{cell.epochs:,}",
                     "yes" if cell.final else "not yet"])
    headers = ["cell", *[f"`{p}`" for p in study.paths], f"best {m.heading}", "trial",
               "complete/pruned/failed", "epochs", "verdict trained"]
    return table(headers, rows, ["l", *["r"] * (len(study.paths) + 4), "l"])


def _rise_text(study: Study) -> list[str]:
    rises = {c.label: study.rise(c) for c in study.cells}
    if study.budget is None:
        return ["The budget per cell is not recorded, so whether the curves still improve is not judged."]
    # A minimised metric's best-so-far curve falls as it improves: say so rather than "rising".
    moving = "rising" if study.higher else "falling"
    window = max(2, math.ceil(RISE_WINDOW * study.budget))
    unit = f" {study.metric.diff_unit}" if study.metric.diff_unit else ""
    resolution = (f" and by more than one validation image ({study.metric.show(study.resolution)}{unit})"
                  if study.resolution else "")
    rule = (f"A curve is *still {moving}* when the best {study.metric.title} of its last {window} trials "
            f"(trials {study.budget - window}–{study.budget - 1}) beats the best before them by more than "
            f"{RISE_SHARE:.0%} of the curve's whole gain (final best − first trial){resolution}.")
    rising = [label for label, r in rises.items() if r.status == "rising"]
    unjudged = [label for label, r in rises.items() if r.status == "unjudged"]
    lines = [rule, ""]
    if rising:
        names = short_names([c.label for c in study.cells])
        sign = 1.0 if study.higher else -1.0
        detail = "; ".join(f"`{cell_text(names[lbl])}` {study.metric.show(sign * rises[lbl].before)} → "
                           f"{study.metric.show(sign * rises[lbl].end)}" for lbl in rising)
        lines.append(f"⚠ **The budget was too small**: {len(rising)} of {len(rises)} curves "
                     f"{'was' if len(rising) == 1 else 'were'} still {moving} at the last trial ({detail}). "
                     + ("Its best configuration is" if len(rising) == 1 else "Their best configurations are")
                     + " likely not the best possible; rerun with a larger `tune.trials`.")
    else:
        lines.append(f"No curve was still {moving} at its last trial: {study.budget} trials per cell were enough "
                     "by this rule" + (f" ({len(unjudged)} not judged: too few complete trials)." if unjudged
                                       else "."))
    return lines


def _ranking_change(study: Study, analyses: Sequence[SourceAnalysis]) -> list[str]:
    """Rank untuned → rank tuned over the cells both sources hold, when an untuned source of the same dataset
    shares cell labels with this one."""
    tuned = study.analysis
    labels = set(tuned.ranked()["label"])
    candidates = [a for a in analyses if not a.source.tuned and a.source.dataset == tuned.source.dataset]
    best = max(candidates, key=lambda a: len(labels & set(a.ranked()["label"])), default=None)
    if best is None:
        return []
    common = labels & set(best.ranked()["label"])
    if len(common) < 2:
        return []
    m = tuned.metric
    before = best.ranked()[best.ranked()["label"].isin(common)].reset_index(drop=True)
    after = tuned.ranked()[tuned.ranked()["label"].isin(common)].reset_index(drop=True)
    rank_before = {lbl: i + 1 for i, lbl in enumerate(before["label"])}
    mean_before = dict(zip(before["label"], before[f"{m.name}_mean"]))
    rows = []
    for i, (label, mean) in enumerate(zip(after["label"], after[f"{m.name}_mean"])):
        r0, r1 = rank_before[label], i + 1
        move = "=" if r0 == r1 else (f"↑ {r0 - r1}" if r1 < r0 else f"↓ {r1 - r0}")
        rows.append([cell_text(label), f"{r0} → {r1}", move, m.show(mean_before[label]), m.show(mean)])
    moved = sum(rank_before[lbl] != i + 1 for i, lbl in enumerate(after["label"]))
    head = (f"How tuning changed the ranking: the untuned cells of **{best.source.name}** (one shared recipe) "
            f"against the tuned cells, ranked by mean {m.heading} among the {len(common)} cells both hold; "
            f"{moved} of them changed rank.")
    return [head, "", *table(["cell", "rank untuned → tuned", "change", f"untuned {m.heading}",
                                f"tuned {m.heading}"], rows, ["l", "r", "r", "r", "r"])]


def as_dict(study: Study) -> dict[str, Any]:
    """The tuning of a source as plain JSON values (report.json): protocol, ranges, per-cell choices and verdicts,
    edge-of-range warnings. Metric values in stored units (fractions for accuracies)."""
    def plain(value: Any) -> Any:
        value = plain_value(value)
        return None if isinstance(value, float) and not math.isfinite(value) else value

    space = {path: ({"choices": [plain(c) for c in r.choices]} if r.choices is not None
                    else {"low": r.low, "high": r.high, "log": r.log}) for path, r in study.space.items()}
    cells = [{"label": c.label, "cell_id": c.cell_id, "chosen_trial": c.chosen_trial, "value": plain(c.chosen_value),
              "params": {k: plain(v) for k, v in c.params.items()}, "complete": c.count("complete"),
              "pruned": c.count("pruned"), "failed": c.count("failed"), "epochs": c.epochs,
              "curve": study.rise(c).status, "verdict_trained": bool(c.final)} for c in study.cells]
    warnings = [{"path": w.path, "label": w.label, "value": plain(w.value), "side": w.side, "message": w.sentence()}
                for w in edge_warnings(study)]
    return {"metric": study.metric.name, "direction": study.direction, "trials_per_cell": study.budget,
            "sampler": study.sampler, "sampler_seed": study.sampler_seed, "pruner": study.pruner,
            "tuning_seeds": study.tuning_seeds, "verdict_seeds": study.verdict_seeds, "space": space,
            "cells": cells, "edge_warnings": warnings, "problems": study.problems}


def caveat(study: Study) -> str | None:
    """One line for under the report's headline when the search may have missed a cell's best configuration
    (a chosen value at the edge of its range, or a curve still improving at the last trial); None otherwise."""
    names = short_names([c.label for c in study.cells])
    edges: dict[str, list[str]] = {}
    for w in edge_warnings(study):
        edges.setdefault(w.name, []).append(w.path)
    rising = [names[c.label] for c in study.cells if study.rise(c).status == "rising"]
    parts = []
    if edges:
        count = sum(len(v) for v in edges.values())
        lie = "values lie at the edge of their range" if count != 1 else "value lies at the edge of its range"
        parts.append(f"{count} chosen {lie} ("
                     + "; ".join(f"`{cell_text(n)}`: {', '.join(paths)}" for n, paths in edges.items()) + ")")
    if rising:
        parts.append(f"{len(rising)} cell{'s were' if len(rising) != 1 else ' was'} still improving at the last "
                     f"trial (" + ", ".join(f"`{cell_text(n)}`" for n in rising) + ")")
    if not parts:
        return None
    return (f"> ⚠ **Tuning may have missed better settings:** {' and '.join(parts)}; these cells may rank higher "
            "with a wider range or more trials (see Tuning).")


def section(study: Study, analyses: Sequence[SourceAnalysis], plots: Sequence[Plot]) -> list[str]:
    """The lines of the Tuning section (without its heading)."""
    warnings = edge_warnings(study)
    lines = [_protocol(study), ""]
    if warnings:
        lines += [f"**Edge of the range** — a chosen value in the outer {EDGE_SHARE:.0%} of its range (on the log "
                  "scale where the range is `log: true`) suggests the best value lies outside it:", ""]
        lines += [f"- ⚠ {w.sentence()}." for w in warnings] + [""]
    elif study.space:
        lines += [f"No chosen value lies in the outer {EDGE_SHARE:.0%} of its range (categorical choices are not "
                  "checked).", ""]
    lines += [f"**Search space** (from {study.space_from}):", "", *_space_table(study), ""]
    lines += [f"**Chosen values per cell** — the best complete trial of each cell by {study.metric.title}; "
              "— marks a parameter that does not apply to the cell; ⚠ a value at the edge of its range; epochs "
              "counts every epoch its trials trained, pruned ones included.", "", *_best_table(study, warnings), ""]
    lines += ["**Budget**", "", *_rise_text(study), ""]
    change = _ranking_change(study, analyses)
    if change:
        lines += ["**Ranking before and after tuning**", "", *change, ""]
    for p in plots:
        lines += [f"![{p.title}]({p.path})", "", f"*{p.caption}*", ""]
    if study.problems:
        lines += [*[f"- {p}" for p in study.problems], ""]
    return lines[:-1] if lines and lines[-1] == "" else lines
