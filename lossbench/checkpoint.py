"""What a cell keeps of its training: final weights, and the training state a killed run resumes from.

Files, under `<results>/checkpoints/` (written by the run's driver, atomically like every other results file):
  <cell-id>.pt          the final weights: {"format": 1, "model": state dict, "loss": state dict, "config": the
                        cell record's resolved config, "epoch": epochs trained}; read with `load_final`
  <cell-id>.resume.pt   the whole training state after an epoch (`train.checkpoint.every`): weights, optimizer,
                        schedule, grad scaler, the random streams of data order, augmentation and dropout, and the
                        history so far; a run that finds it continues the cell from there

`train.checkpoint.keep` says what stays once a cell has ended: `final` (default) the final weights; `last` the final
weights and the training state after the last epoch (<cell-id>.resume.pt, kept); `none` nothing (with `every` N
the resume file lives only while its cell trains). A cell that diverged or failed has no final weights.

Every file is a plain torch pickle of tensors, numbers and strings, loaded with `torch.load(weights_only=True)`:
loading one never runs code. The worker that trains a cell serializes these files to bytes; the driver writes them
into the results directory, so a cell trained on another machine (Ray) checkpoints into the driver's directory.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from lossbench.atomic_write import atomic_write_bytes
from lossbench.errors import ConfigError, LossbenchError
from lossbench.record import Epoch

from lossbench.engine import TrainingProgress, cpu_state

if TYPE_CHECKING:
    from lossbench.config.schema import Suite
    from lossbench.config.source import SuiteSource
    from lossbench.engine import CellParts, ProgressFn, StateFn
    from lossbench.grid import Cell

#: The layout version of both files; a file of another version is refused.
FORMAT = 1
#: The folder of the results directory that holds the checkpoints.
CHECKPOINTS = "checkpoints"

Keep = Literal["final", "last", "none"]


@dataclass(frozen=True)
class CheckpointPolicy:
    """`train.checkpoint` as the runner and the engine use it (picklable)."""

    #: Save the training state every this many epochs (0: never mid-cell).
    every: int = 0
    keep: Keep = "final"

    @property
    def saves_final(self) -> bool:
        return self.keep in ("final", "last")

    def saves_state_after(self, epoch: int, epochs: int) -> bool:
        """Whether a cell of `epochs` epochs saves its training state after `epoch` (1-based)."""
        if epoch == epochs:
            return self.keep == "last"
        return self.every > 0 and epoch % self.every == 0


class CheckpointError(LossbenchError):
    """A checkpoint file that is missing, unreadable or not one lossbench wrote."""


def checkpoint_path(results_dir: Path, cell_id: str) -> Path:
    """Where the final weights of cell `cell_id` are saved in `results_dir`."""
    return Path(results_dir) / CHECKPOINTS / f"{cell_id}.pt"


def resume_path(results_dir: Path, cell_id: str) -> Path:
    """Where the training state of cell `cell_id` is saved in `results_dir` (mid-cell, or kept with `keep: last`)."""
    return Path(results_dir) / CHECKPOINTS / f"{cell_id}.resume.pt"


def to_bytes(payload: dict[str, Any]) -> bytes:
    """`payload` as the bytes of a torch file."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def final_payload(model_state: dict[str, torch.Tensor], loss_state: dict[str, torch.Tensor],
                  config: dict[str, Any], epoch: int) -> dict[str, Any]:
    """The content of a final-weights file."""
    return {"format": FORMAT, "model": model_state, "loss": loss_state, "config": config, "epoch": int(epoch)}


def save_final(path: Path, model: nn.Module, loss: nn.Module, config: dict[str, Any], epoch: int) -> None:
    """Write the final weights of `model` and `loss` with the cell's resolved `config` to `path`, atomically."""
    atomic_write_bytes(Path(path), to_bytes(final_payload(cpu_state(model), cpu_state(loss), config, epoch)))


def load_final(path: Path) -> dict[str, Any]:
    """A final-weights file: {"format", "model", "loss", "config", "epoch"}, tensors on the CPU.

    Raises CheckpointError for a file that is missing, unreadable, or not lossbench's final weights."""
    payload = _load(Path(path))
    missing = [k for k in ("model", "loss", "config", "epoch") if k not in payload]
    if missing:
        raise CheckpointError(message=f"checkpoint {path} is not a lossbench final-weights file (it lacks "
                                      f"{', '.join(missing)})",
                              value=str(path))
    return payload


def capture_training(parts: CellParts, progress: TrainingProgress) -> dict[str, Any]:
    """Everything a cell's training continues from after `progress.epoch`: the content of a training-state file,
    less the config (the runner adds it). Tensors are copied to the CPU; the random streams are read, not
    advanced."""
    device = next(iter(parts.model.parameters()), torch.zeros(0)).device
    return {
        "format": FORMAT,
        "epoch": int(progress.epoch),
        "train_seconds": float(progress.train_seconds),
        "eval_seconds": float(progress.eval_seconds),
        "history": [h.to_dict() for h in progress.history],
        "model": cpu_state(parts.model),
        "loss": cpu_state(parts.loss),
        "optimizer": _to_cpu(parts.optimizer.state_dict()),
        "schedule": parts.schedule.state_dict(),
        "scaler": parts.scaler.state_dict(),
        # The random streams: data order, augmentation parameters, and the global generators (dropout masks).
        "order": parts.order.get_state(),
        "augment_rng": parts.augment_rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def restore_training(parts: CellParts, state: dict[str, Any]) -> TrainingProgress:
    """Put a freshly built cell (components.build_cell) into the saved training `state` (capture_training); the
    progress to continue from (engine.CellRun.resume)."""
    parts.model.load_state_dict(state["model"])
    parts.loss.load_state_dict(state["loss"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.schedule.load_state_dict(state["schedule"])
    if state["scaler"]:  # a disabled scaler (every precision but fp16) has an empty state
        parts.scaler.load_state_dict(state["scaler"])
    parts.order.set_state(state["order"])
    parts.augment_rng.bit_generator.state = state["augment_rng"]
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None:
        device = next(iter(parts.model.parameters())).device
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return TrainingProgress(state["epoch"], state["train_seconds"], state["eval_seconds"],
                            [Epoch.from_dict(h) for h in state["history"]])


def state_saver(policy: CheckpointPolicy, epochs: int, config: dict[str, Any], report: ProgressFn) -> StateFn:
    """The engine's state hook for a cell of `epochs` epochs: after each epoch `policy` names, the training state
    with the cell's resolved `config` goes out as a `checkpoint` event, {"epoch": N, "state": file bytes}, for the
    process that writes the results directory."""

    def save(parts: CellParts, progress: TrainingProgress) -> None:
        if policy.saves_state_after(progress.epoch, epochs):
            state = capture_training(parts, progress)
            state["config"] = config
            report("checkpoint", {"epoch": progress.epoch, "state": to_bytes(state)})

    return save


def load_training(data: bytes, source: str) -> dict[str, Any]:
    """A training-state file's content from its bytes; `source` names it in errors (CheckpointError)."""
    payload = _load(io.BytesIO(data), source)
    missing = [k for k in ("epoch", "history", "model", "optimizer", "schedule", "order") if k not in payload]
    if missing:
        raise CheckpointError(message=f"{source} is not a lossbench training state (it lacks {', '.join(missing)})",
                              value=source)
    return payload


def read_resume(results_dir: str | Path | None, cell_id: str) -> bytes | None:
    """The bytes of a cell's saved training state in `results_dir`, or None when it has none (or there is no
    results directory). Read by the process that writes the results directory, and sent to where the cell trains."""
    if results_dir is None:
        return None
    try:
        return resume_path(Path(results_dir), cell_id).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _to_cpu(value: Any) -> Any:
    """`value` (nested dicts and lists of an optimizer's state) with every tensor copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def _load(path: Path | io.BytesIO, source: str | None = None) -> dict[str, Any]:
    """A lossbench checkpoint's content; `source` names it in errors (default: `checkpoint <path>`)."""
    source = source or f"checkpoint {path}"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(message=f"{source} does not exist", value=str(path)) from None
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, which would run whatever code the file holds.
        raise CheckpointError(message=f"cannot read {source}: it is not a torch file of tensors, numbers and text "
                                      "(lossbench loads checkpoints with weights_only, which never runs code)",
                              value=source) from None
    except Exception as exc:  # a truncated or foreign file: zip and torch raise their own types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "the file is empty or cut short"
        raise CheckpointError(message=f"cannot read {source}: {type(exc).__name__}: {first}",
                              value=source) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        version = payload.get("format") if isinstance(payload, dict) else None
        raise CheckpointError(message=f"{source} is not a lossbench checkpoint of format {FORMAT} (format {version!r})",
                              value=source)
    return payload


@dataclass(frozen=True)
class CheckpointSizes:
    """The disk a suite's checkpoints take, in bytes, from its models built on the `meta` device (no memory)."""

    #: The final-weights files of all the cells, together.
    final: int
    #: The training-state files of all the cells, together (each: weights and optimizer state).
    state: int
    #: The largest training-state file of one cell.
    largest_state: int


def estimate_sizes(suite: Any, cells: list[Any], with_state: bool = True) -> CheckpointSizes | None:
    """The checkpoint sizes of `cells` of `suite` (a config.Suite and its grid.Cells), or None when the image size
    is not known without decoding the dataset. `with_state=False` counts the training states as weights only:
    sizing the optimizer state builds an optimizer, and torch.optim imports torch._dynamo (seconds at start-up),
    which `validate` need not pay when no training state is kept."""
    from lossbench.data.load import known_image_shape

    dataset = suite.dataset
    try:
        shape = known_image_shape(dataset)
    except LossbenchError:
        return None
    if shape is None:
        return None
    sizes: dict[str, tuple[int, int]] = {}
    final = state = largest = 0
    for cell in cells:
        key = repr([cell.config[k] for k in ("model", "loss", "optimizer", "regularizer")])
        if key not in sizes:
            sizes[key] = _cell_sizes(cell, shape, with_state)
        weights, optimizer = sizes[key]
        final += weights
        state += weights + optimizer
        largest = max(largest, weights + optimizer)
    return CheckpointSizes(final, state, largest)


def _cell_sizes(cell: Cell, shape: Any, with_state: bool = True) -> tuple[int, int]:
    """(bytes of the weights, bytes of the optimizer state) of one cell, as its recipe builds its model, whose images
    have `shape` (ImageShape)."""
    import itertools

    from lossbench.components import build_loss, build_regularizers, model_facts
    from lossbench.registries import registries

    reg, model_spec = registries(), cell.recipe.model
    loss = build_loss(cell)
    facts = model_facts(shape, loss, build_regularizers(cell).dropout())
    with torch.device("meta"):
        model = reg["models"].build(model_spec.name, model_spec.params).build(facts)
        loss.setup(shape.num_classes)
        params = list(itertools.chain(model.parameters(), loss.parameters()))
        if not with_state:
            weights = sum(_nbytes(t) for t in itertools.chain(model.state_dict().values(),
                                                             loss.state_dict().values()))
            return weights, 0
        optimizer = reg["optimizers"].build(cell.optimizer.name, cell.optimizer.params).build(params, fused=False)
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()  # optimizers create their state (momentum, moments) at the first step
    weights = sum(_nbytes(t) for t in itertools.chain(model.state_dict().values(), loss.state_dict().values()))
    slots = optimizer.state_dict()["state"].values()
    return weights, sum(_nbytes(t) for s in slots for t in s.values() if isinstance(t, torch.Tensor))


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def describe_disk(policy: CheckpointPolicy, sizes: CheckpointSizes | None, cells: int, directory: Path) -> str:
    """One line for `validate`: what `train.checkpoint` will write to disk for `cells` cells, and how much."""
    where = Path(directory) / CHECKPOINTS
    if not policy.saves_final and policy.every == 0:
        return "checkpoints: none (train.checkpoint.keep: none)"
    if sizes is None:
        return (f"checkpoints: {cells} cell(s) × the model's weights in {where} (the size is known once the data "
                "is loaded)")
    if policy.keep == "last":
        kept = f"final weights and training state, {cells} cell(s): {_size(sizes.final + sizes.state)}"
    elif policy.keep == "final":
        kept = f"final weights, {cells} cell(s) × {_size(sizes.final // max(cells, 1))} = {_size(sizes.final)}"
    else:
        kept = "nothing kept once a cell ends"
    line = f"checkpoints in {where}: {kept}"
    if policy.every:
        line += (f"; while a cell trains, its training state ({_size(sizes.largest_state)} at most) every "
                 f"{policy.every} epoch(s)")
    return line


def _size(n: int) -> str:
    """A byte count for people: 512 B, 3.4 kB, 45.1 MB, 1.20 GB (powers of 1000, like `ls -lh --si`)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{n} B"


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
