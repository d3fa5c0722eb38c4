"""TensorBoard event files of a run, written by the driver from the same events the live display gets: one run per
cell × seed with its per-epoch scalars, and its final metrics as hparams beside its grid axes. Because the driver
writes them, they are the same with --jobs and on Ray, where cells train in other processes.

Needs the optional `tensorboard` package (`pip install 'lossbench[tensorboard]'`); torch.utils.tensorboard writes
the files. View them with `tensorboard --logdir DIR`.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

from lossbench.errors import ConfigError, Location
from lossbench.grid import Cell
from lossbench.record import CellRecord

#: Per-epoch history key → TensorBoard tag.
EPOCH_SCALARS = {
    "train_loss": "train/loss", "train_acc": "train/acc", "test_loss": "test/loss", "test_acc": "test/acc",
    "test_top5": "test/top5", "val_loss": "val/loss", "val_acc": "val/acc", "lr": "lr",
    "penalty_share": "train/penalty_share", "epoch_s": "time/epoch_s",
}
#: Final metrics shown as hparams metrics (tags `final/<name>`), when the cell has them.
FINAL_METRICS = ("test_acc", "test_top5", "test_nll", "ece", "brier", "gap", "train_acc", "precision_at_1", "map_at_r",
                 # Under shift and out of distribution (a suite's evaluate: block; lossbench/shift/evaluate.py).
                 "corrupt_acc", "corrupt_nll", "corrupt_ece", "ood_auroc_msp", "ood_fpr95_msp", "ood_auroc_energy",
                 "ood_fpr95_energy")


def check_available(option: str = "--tensorboard") -> None:
    """Raise ConfigError (before anything trains) when the tensorboard package is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(message=f"{option} needs the tensorboard package, which is not installed",
                          details=["install it with `pip install 'lossbench[tensorboard]'` "
                                   "(or `uv sync --extra tensorboard`)"])


#: Longest run name, in bytes: common file systems stop at 255 (ext4, APFS, NTFS), less room for the `__v<N>` that
#: `fresh_folder` adds to a cell trained again.
_MAX_NAME_BYTES = 255 - 8


def run_name(cell: Cell) -> str:
    """A directory name per cell × seed that reads like its label: `cross_entropy__l2(weight=1e-4)__none__seed0`.

    A label too long for a file name (a long augmentation pipeline) keeps its start and gets the cell id, which
    keeps it unique: `cross_entropy__none__crop(padding=1)+…~1a2b3c4d5e6f__seed0`, at most 247 bytes."""
    readable = re.sub(r"[^A-Za-z0-9._=(),+-]+", "_", cell.label.replace(" | ", "__")).strip("_")
    name = f"{readable}__seed{cell.seed}"
    if len(name.encode()) <= _MAX_NAME_BYTES:
        return name
    tail = f"~{cell.id}__seed{cell.seed}"
    return readable[:_MAX_NAME_BYTES - len(tail)] + tail  # the readable part is ASCII: one byte a character


def check_log_dir(log_dir: Path, option: str = "--tensorboard") -> None:
    """Raise ConfigError (before anything is written) when `log_dir`, or the nearest of its parents that exists,
    is not a directory: it could not be made."""
    for path in (log_dir, *log_dir.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(message=f"{path} is a file, not a directory",
                                  location=Location(option=f"{option} {log_dir}"), value=str(log_dir),
                                  details=["give --tensorboard a new or existing directory"])
            return


def experiment_name(suite: str, results_dir: Path) -> str:
    """The folder of one experiment's runs: the suite name and the results directory's own id, e.g.
    `smoke-3f9a0c12b7de`, so that runs of two experiments in one --tensorboard directory never share a folder."""
    from lossbench.store import results_id

    readable = re.sub(r"[^A-Za-z0-9._=(),+-]+", "_", suite).strip("_") or "suite"
    return f"{readable}-{results_id(results_dir)}"


def fresh_folder(path: Path) -> Path:
    """`path`, or when it already holds files (a cell trained again into the same experiment) the first free
    `path__v2`, `path__v3`, ...: appending to an existing run would mix two trainings' curves."""
    candidate, version = path, 2
    while candidate.exists() and any(candidate.iterdir()):
        candidate = path.with_name(f"{path.name}__v{version}")
        version += 1
    return candidate


class TensorBoardWriter:
    """A run display that writes TensorBoard events instead of showing anything (see the module docstring).

    Runs go to DIR/<suite>-<results id>/<cell label>__seed<N>: `results_dir` is the run's results directory, whose
    id is read (or made) when the run starts, holding the directory's lock."""

    def __init__(self, log_dir: Path, suite: str = "suite", results_dir: Path | None = None):
        check_available()
        self.log_dir = Path(log_dir)
        self.suite, self.results_dir = suite, results_dir
        self.experiment: Path = self.log_dir
        self.writers: dict[str, Any] = {}

    def _writer(self, cell: Cell) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        if cell.id not in self.writers:
            folder = fresh_folder(self.experiment / run_name(cell))
            self.writers[cell.id] = SummaryWriter(log_dir=str(folder))
        return self.writers[cell.id]

    def start(self, total: int, skipped: int) -> None:
        if self.results_dir is not None:
            self.experiment = self.log_dir / experiment_name(self.suite, self.results_dir)
        self.experiment.mkdir(parents=True, exist_ok=True)

    def cell_start(self, cell: Cell) -> None:
        self._writer(cell)

    def cell_event(self, cell: Cell, event: str, info: dict[str, Any]) -> None:
        if event != "epoch":
            return
        writer = self._writer(cell)
        for key, tag in EPOCH_SCALARS.items():
            value = info.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(tag, float(value), global_step=int(info["epoch"]))
        writer.flush()

    def cell_end(self, cell: Cell, record: CellRecord) -> None:
        writer = self._writer(cell)
        hparams: dict[str, Any] = {axis: str(level) for axis, level in cell.axes.items()}
        hparams["seed"] = cell.seed
        hparams["status"] = record.status
        values = {name: record.value(name) for name in FINAL_METRICS}
        final = {f"final/{name}": float(value) for name, value in values.items()
                 if isinstance(value, (int, float)) and not isinstance(value, bool)}
        # run_name="." keeps the hparams in this cell's own run instead of a new timestamped one.
        writer.add_hparams(hparams, final, run_name=".")
        writer.close()
        self.writers.pop(cell.id, None)

    def next_round(self, cells: int) -> None:
        """A round of adaptive seeding adds cells; each gets its own run as it starts."""

    def plan_range(self, fewest: int, most: int) -> None:
        """Adaptive seeding's range of trainings: nothing to log (each cell's run is written as it trains)."""

    def finish(self) -> None:
        for writer in self.writers.values():  # cells that never ended (interrupted): keep what they wrote
            writer.close()
        self.writers.clear()
