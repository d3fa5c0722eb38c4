"""Checks on a validated suite that need more than one section of it: the model fits the data and the losses,
the resized images fit in memory, adaptive seeding aims at a measured metric, packs save no training state."""

from __future__ import annotations

from lossbench.config.schema import Suite
from lossbench.config.source import SuiteSource
from lossbench.errors import ConfigError, LossbenchError, did_you_mean


def check_model_fit(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """The model can place the dropout every regularizer entry asks for, and, where the dataset's shape is known
    without decoding it, takes its images and gives every loss the output width it needs."""
    from lossbench.components import check_dropout_placement, check_model_shape, model_facts, registries
    from lossbench.errors import ModelFitError
    from lossbench.regularizers import RegularizerSet

    model, params = suite.model.name, suite.model.params
    errors: list[ConfigError] = []
    placements = []
    for i, stack in enumerate(suite.grid.regularizer):
        placement = RegularizerSet([registries()["regularizers"].build(s.name, s.params) for s in stack]).dropout()
        try:
            check_dropout_placement(model, placement)
        except ModelFitError as exc:
            exc.location = source.locate(["grid", "regularizer", i])
            errors.append(exc)
        placements.append(placement)
    from lossbench.data.load import known_image_shape

    dataset = suite.dataset
    try:
        shape = known_image_shape(dataset)
    except LossbenchError:
        return errors  # an unusable root or source: the data checks of `validate` name it
    if shape is None or errors:
        return errors
    losses = [registries()["losses"].build(s.name, s.params) for s in suite.grid.loss]
    seen: set[str] = set()
    for facts in dict.fromkeys(model_facts(shape, loss, p) for loss in losses for p in placements):
        try:
            check_model_shape(model, params, facts)
        except ModelFitError as exc:
            if exc.message not in seen:
                seen.add(exc.message)
                exc.location = source.locate(["model", exc.parameter or "name"])
                exc.details.append(f"the dataset '{dataset.name}' gives the model images of "
                                   f"{shape.height}×{shape.width} pixels")
                errors.append(exc)
    return errors


def check_data_memory(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """The images resized to dataset.image_size fit in memory, where their count is known without reading them."""
    dataset = suite.dataset
    if dataset.image_size is None:
        return []
    from lossbench.data.load import check_resized_memory

    try:
        check_resized_memory(dataset)
    except LossbenchError as exc:
        return [ConfigError(message=exc.message, location=source.locate(["dataset", "image_size"]),
                            value=dataset.image_size, details=exc.details)]
    return []


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


def check_checkpoint(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """A training state is one cell's; a pack trains several cells as one model, so packs save no training state
    (`every` > 0 or `keep: last`); their final weights are saved per cell all the same."""
    train = suite.train
    checkpoint = train.checkpoint
    if train.pack == 1 or (checkpoint.every == 0 and checkpoint.keep != "last"):
        return []
    key = "every" if checkpoint.every > 0 else "keep"
    value = checkpoint.every if key == "every" else checkpoint.keep
    return [ConfigError(
        message=f"train.checkpoint.{key} {value} saves each cell's training state, which packed cells (train.pack "
                f"{train.pack}) do not do",
        location=source.locate(["train", "checkpoint", key]), value=value,
        details=["set train.checkpoint to {every: 0, keep: final} (final weights are still saved per cell), or "
                 "train.pack (--pack) to 1"])]
