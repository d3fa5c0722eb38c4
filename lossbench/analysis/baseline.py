"""Which cell each cell is compared with: the requested baseline, else the `cross_entropy | none | none` cell of
each combination of the other axes. Adaptive seeding pairs its rounds on this choice and the report compares on
it, so both read it here. Cells are named by their labels (`loss | regularizer | augmentation …`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lossbench.errors import ConfigError, Location, did_you_mean

if TYPE_CHECKING:
    import pandas as pd

#: The default baseline: plain cross-entropy, no regularizer, no augmentation (label `cross_entropy | none | none`).
DEFAULT_BASELINE = {"loss": "cross_entropy", "regularizer": "none", "augmentation": "none"}


def normalize_label(label: str) -> str:
    """A label with its ' | ' separators normalized, so `cross_entropy|none|none` names the same cell."""
    return " | ".join(part.strip() for part in label.split("|"))


def closest_label(wanted: str, labels: list[str]) -> str | None:
    """The label that agrees with `wanted` on the most axes, comparing each axis by its component names (so
    `cross_entropy | none | crop` finds `cross_entropy | none | crop(padding=1)`, not `... | none | none`);
    a spelling match (did_you_mean) where no label agrees on every axis given."""
    def names(part: str) -> list[str]:
        return [p.split("(")[0].strip() for p in part.split("+")]

    parts = [names(p) for p in normalize_label(wanted).split(" | ")]
    scored = []
    for label in labels:
        theirs = [names(p) for p in normalize_label(label).split(" | ")]
        if len(theirs) == len(parts):
            scored.append((sum(a == b for a, b in zip(parts, theirs)), label))
    best = max(scored, default=(0, None), key=lambda s: s[0])
    if best[1] is not None and best[0] == len(parts) and sum(s[0] == best[0] for s in scored) == 1:
        return best[1]
    return did_you_mean(wanted, labels)


def choose_baselines(summary: pd.DataFrame, axes: list[str],
                      requested: str | None) -> tuple[dict[str, str], str | None, str | None]:
    """Map each label to the label of its baseline; also return the baseline to show and a note for the reader."""
    ranked = summary[summary["rank"].notna()]
    labels = list(summary["label"])
    if requested is not None:
        match = [x for x in labels if normalize_label(x) == normalize_label(requested)]
        if not match:
            return {}, None, f"the baseline '{requested}' is not in this source; no comparison"
        return {x: match[0] for x in labels}, match[0], None
    is_default = np.ones(len(summary), dtype=bool)
    for axis, level in DEFAULT_BASELINE.items():
        if axis in summary:
            is_default &= (summary[axis] == level).to_numpy()
    defaults = summary[is_default]
    if len(defaults) == 0:
        if len(ranked) == 0:
            return {}, None, "no cell has a result; no comparison"
        best = ranked.iloc[0]["label"]
        return ({x: best for x in labels}, best,
                f"the grid has no `{' | '.join(DEFAULT_BASELINE.values())}` cell, so every cell is compared with "
                f"the best one, `{best}` (choose another with --baseline LABEL)")
    others = [a for a in axes if a not in DEFAULT_BASELINE]
    # Several default cells differ on the other axes (say the optimizer): each cell meets the one sharing them.
    by_context = {tuple(r[a] for a in others): r["label"] for _, r in defaults.iterrows()}
    mapping = {}
    for _, r in summary.iterrows():
        base = by_context.get(tuple(r[a] for a in others))
        if base is not None:
            mapping[r["label"]] = base
    shown = defaults.iloc[0]["label"] if len(defaults) == 1 else None
    note = None if len(defaults) == 1 else (
        f"each cell is compared with the `{' | '.join(DEFAULT_BASELINE.values())}` cell of the same "
        + ", ".join(others))
    return mapping, shown, note


def point_baselines(points: pd.DataFrame, axes: list[str], requested: str | None) -> dict[str, str | None]:
    """Each grid point's baseline (a baseline maps to itself; None where its context has none), chosen as the
    report chooses: `requested`, else the `cross_entropy | none | none` point of each combination of the other
    axes. `points` has a `label` column and one column per axis."""
    labels = list(points["label"])
    if requested is not None:
        wanted = normalize_label(requested)
        if wanted not in {normalize_label(x) for x in labels}:
            raise ConfigError(message=f"seeds.baseline '{requested}' is not a cell of this grid",
                              location=Location(path="seeds.baseline"), value=requested, allowed=labels,
                              suggestion=did_you_mean(wanted, labels))
    else:
        import pandas as pd  # here, not at import: `validate` imports this module and must start fast

        is_default = pd.Series(True, index=points.index)
        for axis, level in DEFAULT_BASELINE.items():
            is_default &= points[axis] == level
        if not is_default.any():
            default = " | ".join(DEFAULT_BASELINE.values())
            raise ConfigError(
                message=f"adaptive seeding compares every cell with a baseline, and the grid has no `{default}` "
                        "cell", location=Location(path="seeds.baseline"), allowed=labels,
                details=["name one of the cells as seeds.baseline"])
    mapping, _, _ = choose_baselines(points.assign(rank=1.0), axes, requested)
    return {label: mapping.get(label) for label in labels}


