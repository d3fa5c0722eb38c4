"""The in-memory form of a dataset that the engine trains on."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class ImageShape:
    """The shape of a dataset's images and the number of its classes: what a model must fit."""

    channels: int
    height: int
    width: int
    num_classes: int


@dataclass(frozen=True)
class ImageData:
    """A classification dataset as uint8 image tensors and int64 labels.

    Images are [N, C, H, W] uint8 (0..255); labels are [N] int64 in 0..num_classes-1. `mean` and `std` are per
    channel, in [0, 1] pixel units, measured on the training split; the engine normalizes with them on the device.
    `identity` names the source and every option that changes the tensors (subsets, validation split); it is
    part of every cell id, so results from different data never mix.
    """

    name: str
    identity: str
    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def to(self, device: torch.device | str) -> ImageData:
        """The same dataset with every tensor moved to `device` (uint8 stays uint8: 1 byte per pixel)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return replace(
            self,
            train_x=move(self.train_x),
            train_y=move(self.train_y),
            test_x=move(self.test_x),
            test_y=move(self.test_y),
            val_x=move(self.val_x),
            val_y=move(self.val_y),
        )
