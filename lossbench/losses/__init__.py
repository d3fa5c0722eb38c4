"""Losses, registered by name. Importing this package registers every built-in loss.

Families: `classification` (logit heads), `robust` (logit heads, for noisy labels), `margin` (logit heads whose
class layer, and centres, belong to the loss and train with the model), `embedding` (embedding heads, predictions
by k-NN). A suite may also name a user's module as `package.module:Class` (see `custom`).
"""

from lossbench.losses.base import Head, Loss
from lossbench.registry import Registry, _is_import_path


class LossRegistry(Registry[Loss]):
    """The loss registry: a custom `package.module:Class` is checked on lookup and adapted to `Loss`."""

    def get(self, name: str) -> type[Loss]:
        cls = super().get(name)
        if name in self._entries or not _is_import_path(name):
            return cls
        from lossbench.losses.custom import adapt

        return adapt(name, cls)

    def check_custom(self, path: str, cls: type) -> None:
        from lossbench.losses.custom import check_custom_class

        check_custom_class(path, cls)


LOSSES: LossRegistry = LossRegistry("losses", "loss")

from lossbench.losses import classification, embedding, margin, robust  # noqa: E402,F401  (registers the built-in losses)

__all__ = ["LOSSES", "Head", "Loss", "LossRegistry"]
