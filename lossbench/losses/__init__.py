"""Losses, registered by name. Importing this package registers every built-in loss."""

from lossbench.losses.base import Head, Loss
from lossbench.registry import Registry

LOSSES: Registry[Loss] = Registry("losses", "loss")

from lossbench.losses import classification  # noqa: E402,F401  (registers the built-in losses)

__all__ = ["LOSSES", "Head", "Loss"]
