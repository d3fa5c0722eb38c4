"""Device and precision: which device a run trains on, autocast, synchronization, peak memory, and the
conversion of the uint8 images kept on the device into standardized float batches."""

from __future__ import annotations

import resource
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from lossbench.data.base import ImageData

Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class EngineOptions:
    """Where and how a cell's recipe runs: the device, the precision resolved on it, and the model's layout. What a
    cell trains (epochs, batch sizes, model, schedule) is its recipe (grid.Recipe), not an option."""

    device: torch.device
    precision: Precision
    #: Run the model in the channels-last memory layout (faster convolutions on CUDA and, measured, on CPU).
    channels_last: bool = False
    #: Compile the model with torch.compile (meant for CUDA GPUs; on CPU it measured slower: docs/performance.md).
    compile: bool = False


def engine_options(device: str, precision: str, compile: bool = False) -> EngineOptions:
    """The options a cell runs with on the requested device (`auto`, `cpu`, `cuda`, ...): the device and the
    precision resolved on this machine (ValueError where either is not available) and the layout that is fastest
    there."""
    resolved = resolve_device(device)
    return EngineOptions(
        device=resolved,
        precision=resolve_precision(precision, resolved),
        # Measured faster on CPU as well (docs/performance.md); MPS is left in the default layout.
        channels_last=resolved.type in ("cuda", "cpu"),
        compile=compile,
    )


def resolve_device(requested: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device that is absent raises ValueError."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA GPU")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was requested but the MPS backend is not available")
    return torch.device(requested)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """`auto` is bf16 autocast on a CUDA GPU that supports it and fp32 elsewhere."""
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise ValueError("fp16 training needs a GPU; use bf16 or fp32 on the CPU")
        return requested  # type: ignore[return-value]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: Precision) -> AbstractContextManager[object]:
    """The autocast context of a precision: none for fp32, bf16 or fp16 autocast otherwise."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (so that a host clock measures it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this cell: CUDA max allocated, or the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class Normalizer:
    """uint8 images → float, scaled to [0, 1], and (after augmentation) standardized per channel."""

    def __init__(self, data: ImageData, device: torch.device, channels_last: bool):
        self.mean = torch.tensor(data.mean, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(data.std, device=device, dtype=torch.float32).clamp(min=1e-6).view(1, -1, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(dtype=torch.float32, memory_format=self.memory_format).mul_(1.0 / 255.0)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std
