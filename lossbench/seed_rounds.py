"""The rounds of adaptive seeding over a run: which cells (grid point × seed) the next round trains.

A thin layer between the runner and the pure rule in `adaptive_seeds`: it turns result records into per-seed
values of the target metric, maps every grid point to its baseline the way the report does, and answers "what
is still to run" from whatever has finished — so the first round, every later round and a resumed run are the
same question asked of different files. `check_seed_target` refuses, before anything trains, a target metric that
these rounds could not read off every cell.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lossbench.analysis.adaptive_seeds import PointDecision, SeedRule, decide
from lossbench.analysis.baseline import point_baselines
from lossbench.config.schema import AdaptiveSeeds, Suite
from lossbench.config.source import SuiteSource
from lossbench.errors import ConfigError, did_you_mean
from lossbench.grid import Cell
from lossbench.record import CellRecord


def metric_value(record: CellRecord, metric: str) -> float | None:
    """The value of `metric` in a result record, as the report reads it; None unless the cell is done and
    recorded a finite number."""
    if record.status != "done":
        return None
    value = record.value(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class SeedRounds:
    """Adaptive seeding over the cells of one suite (every grid point × seeds 0 … max−1)."""

    seeds: AdaptiveSeeds
    cells: list[Cell]
    #: Records written by this run (all statuses): a cell that failed in this run is not retried by its later
    #: rounds (it counts as finished without a value); the next run retries it.
    fresh: dict[str, CellRecord] = field(default_factory=dict)
    rule: SeedRule = field(init=False)
    baselines: dict[str, str | None] = field(init=False)
    _by_point: dict[tuple[str, int], Cell] = field(init=False)

    def __post_init__(self) -> None:
        # pandas loads here, not at import: `validate` runs this module's seed-target check and must start fast.
        import pandas as pd

        self.rule = SeedRule.for_target(self.seeds.min, self.seeds.max, self.seeds.target.metric,
                                        self.seeds.target.half_width)
        points = pd.DataFrame([{"label": c.label, **c.axes} for c in self.cells if c.seed == 0])
        self.baselines = point_baselines(points, list(self.cells[0].axes), self.seeds.baseline)
        self._by_point = {(c.label, c.seed): c for c in self.cells}

    @property
    def points(self) -> int:
        return len(self.baselines)

    def values(self, kept: Iterable[CellRecord]) -> dict[str, dict[int, float | None]]:
        """Per point, the target metric of every finished seed: `kept` final records (done, diverged) and this
        run's records (failed ones too, as finished without a value)."""
        out: dict[str, dict[int, float | None]] = {label: {} for label in self.baselines}
        ids = {c.id for c in self.cells}
        for record in [*kept, *self.fresh.values()]:
            if record.id in ids:
                out[record.label][int(record.seed)] = metric_value(record, self.seeds.target.metric)
        return out

    def decisions(self, kept: Iterable[CellRecord]) -> dict[str, PointDecision]:
        return decide(self.values(kept), self.baselines, self.rule)

    def required(self, decisions: Mapping[str, PointDecision]) -> list[Cell]:
        """The cells the decisions ask for, in grid order."""
        wanted = {(label, s) for label, d in decisions.items() for s in range(d.seeds)}
        return [c for c in self.cells if (c.label, c.seed) in wanted]

    def pending(self, kept: Iterable[CellRecord]) -> list[Cell]:
        """The cells the next round trains: required now and not finished."""
        kept = list(kept)
        values = self.values(kept)
        return [c for c in self.required(decide(values, self.baselines, self.rule)) if c.seed not in values[c.label]]

    def bounds(self) -> tuple[int, int]:
        """The fewest and the most trainings the rounds can take (every point at min, every point at max)."""
        compared = {label for label, base in self.baselines.items() if base is not None and base != label}
        references = {self.baselines[label] for label in compared}
        grows = len(compared | references)  # type: ignore[operator]
        return (self.points * self.rule.min_seeds,
                grows * self.rule.max_seeds + (self.points - grows) * self.rule.min_seeds)


def check_seed_target(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """Adaptive seeding's target metric must be one the report knows and every cell of this suite records."""
    rule = suite.adaptive
    if rule is None:
        return []
    from lossbench.analysis.measures import MEASURES

    metric = rule.target.metric
    where = source.locate(["seeds", "target", "metric"])
    if metric not in MEASURES:
        return [ConfigError(message=f"unknown metric '{metric}' for the seeds target", location=where, value=metric,
                            allowed=list(MEASURES), suggestion=did_you_mean(metric, list(MEASURES)))]
    from lossbench.embedding_eval import RETRIEVAL_METRICS
    from lossbench.losses import LOSSES

    if metric in RETRIEVAL_METRICS:
        logits = [s.name for s in suite.grid.loss if getattr(LOSSES.get(s.name), "head", "logits") != "embedding"]
        if logits:
            return [ConfigError(
                message=f"the seeds target is {metric}, but {metric} is measured only on embedding heads, and "
                        f"these losses train logits: {', '.join(logits)}", location=where, value=metric,
                details=["aim at test_acc (every head records it), or grid only embedding losses "
                         "(lossbench list losses)"])]
    if metric == "val_acc" and suite.dataset.val_fraction == 0:
        return [ConfigError(message="the seeds target is val_acc, but dataset.val_fraction is 0: no cell measures "
                                    "a validation accuracy", location=where, value=metric,
                            details=["set dataset.val_fraction (e.g. 0.1) or aim at test_acc"])]
    from lossbench.shift.checks import shift_metric_error

    unmeasured = shift_metric_error(metric, suite, where)
    return [unmeasured] if unmeasured else []
