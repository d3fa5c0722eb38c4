"""What each number in a cell result means to a reader: its name, direction, display unit and scale.

Cell files store fractions (accuracy 0.9861), nats, seconds and MiB. The report shows accuracies and ECE in
percent and their differences in percentage points; everything else in its stored unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    """How to show one metric: `scale` multiplies the stored value for display; `unit` names the displayed unit
    and `diff_unit` the unit of a difference of two values; `higher_is_better` is None when unknown; `bounds` is
    the range of possible stored values (a t-interval can reach past it; displayed intervals are cut at it)."""

    name: str
    title: str
    unit: str
    diff_unit: str
    scale: float
    digits: int
    higher_is_better: bool | None
    bounds: tuple[float, float] | None = None

    def clip(self, value: float) -> float:
        """`value` cut to this measure's possible range (unchanged when the range is unbounded)."""
        if self.bounds is None or value is None or math.isnan(value):
            return value
        return min(max(value, self.bounds[0]), self.bounds[1])

    @property
    def heading(self) -> str:
        """Column heading with the unit, e.g. 'test acc (%)'."""
        return f"{self.title} ({self.unit})" if self.unit else self.title

    def show(self, value: float | None, signed: bool = False) -> str:
        """The value in display units with this measure's digits; '—' for a missing value."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        return format(value * self.scale, f"{'+' if signed else ''},.{self.digits}f")


_KNOWN = [
    Measure("test_acc", "test acc", "%", "pp", 100.0, 2, True, (0.0, 1.0)),
    Measure("test_top5", "test top-5", "%", "pp", 100.0, 2, True, (0.0, 1.0)),
    Measure("train_acc", "train acc", "%", "pp", 100.0, 2, True, (0.0, 1.0)),
    Measure("val_acc", "val acc", "%", "pp", 100.0, 2, True, (0.0, 1.0)),
    Measure("val_top5", "val top-5", "%", "pp", 100.0, 2, True, (0.0, 1.0)),
    Measure("val_nll", "val NLL", "nats", "nats", 1.0, 3, False),
    Measure("val_ece", "val ECE", "%", "pp", 100.0, 2, False, (0.0, 1.0)),
    Measure("val_loss", "val loss", "", "", 1.0, 4, False),
    Measure("precision_at_1", "precision@1", "%", "pp", 100.0, 2, True, (0.0, 1.0)),
    Measure("map_at_r", "MAP@R", "%", "pp", 100.0, 2, True, (0.0, 1.0)),
    Measure("test_nll", "test NLL", "nats", "nats", 1.0, 3, False),
    Measure("test_loss", "test loss", "", "", 1.0, 4, False),
    Measure("ece", "ECE", "%", "pp", 100.0, 2, False, (0.0, 1.0)),
    Measure("brier", "Brier score", "", "", 1.0, 4, False, (0.0, 2.0)),
    Measure("gap", "train−test gap", "pp", "pp", 100.0, 2, False),
    Measure("train_time_s", "train time", "s", "s", 1.0, 1, False),
    Measure("eval_time_s", "eval time", "s", "s", 1.0, 2, False),
    Measure("epoch_s", "train+eval per epoch", "s", "s", 1.0, 2, False),
    Measure("cell_s", "cell time", "s", "s", 1.0, 1, False),
    Measure("overhead_s", "overhead", "s", "s", 1.0, 2, False),
    Measure("img_per_s", "throughput", "img/s", "img/s", 1.0, 0, True),
    Measure("peak_mem_mb", "peak memory", "MiB", "MiB", 1.0, 0, False),
    Measure("epochs_run", "epochs run", "", "", 1.0, 0, None),
    # Under shift and out of distribution (lossbench/shift/evaluate.py): means over the evaluated corruptions ×
    # severities, and over the OOD sources.
    Measure("corrupt_acc", "corrupted acc", "%", "pp", 100.0, 2, True, (0.0, 1.0)),
    Measure("corrupt_nll", "corrupted NLL", "nats", "nats", 1.0, 3, False),
    Measure("corrupt_ece", "corrupted ECE", "%", "pp", 100.0, 2, False, (0.0, 1.0)),
    Measure("ood_auroc_msp", "OOD AUROC (MSP)", "%", "pp", 100.0, 2, True, (0.0, 1.0)),
    Measure("ood_fpr95_msp", "OOD FPR95 (MSP)", "%", "pp", 100.0, 2, False, (0.0, 1.0)),
    Measure("ood_auroc_energy", "OOD AUROC (energy)", "%", "pp", 100.0, 2, True, (0.0, 1.0)),
    Measure("ood_fpr95_energy", "OOD FPR95 (energy)", "%", "pp", 100.0, 2, False, (0.0, 1.0)),
]
MEASURES: dict[str, Measure] = {m.name: m for m in _KNOWN}


def measure(name: str) -> Measure:
    """The Measure of a metric name; an unknown numeric metric is shown raw with an unknown direction."""
    return MEASURES.get(name) or Measure(name, name, "", "", 1.0, 4, None)
