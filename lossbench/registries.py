"""The one table of registries, by kind: what `lossbench list`, suite validation, grid expansion and cell
building all read. A new kind of component is one line in KINDS and one in `registries()`.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lossbench.registry import Registry

# This module imports torch and the components only when a function needs them: the CLI reads KINDS at start-up
# (help, shell completion) and must not wait for torch.

#: The kinds of component a suite can name, in the order `lossbench list` shows them.
KINDS: tuple[str, ...] = (
    "losses", "regularizers", "augmentations", "models", "datasets", "optimizers", "schedules", "scenarios",
)


@cache
def registries() -> dict[str, Registry[Any]]:
    """The one table of registries, by kind (in KINDS order). A new kind of component is one line here and one
    in KINDS. Importing the registries registers every built-in component."""
    from lossbench.augment import AUGMENTATIONS
    from lossbench.data import DATASETS
    from lossbench.data.scenarios import SCENARIOS
    from lossbench.losses import LOSSES
    from lossbench.models import MODELS
    from lossbench.optim import OPTIMIZERS, SCHEDULES
    from lossbench.regularizers import REGULARIZERS

    table = {
        "losses": LOSSES,
        "regularizers": REGULARIZERS,
        "augmentations": AUGMENTATIONS,
        "models": MODELS,
        "datasets": DATASETS,
        "optimizers": OPTIMIZERS,
        "schedules": SCHEDULES,
        "scenarios": SCENARIOS,
    }
    return {kind: table[kind] for kind in KINDS}
