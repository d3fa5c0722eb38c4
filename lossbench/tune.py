"""Equal-budget tuning: every grid cell gets `tune.trials` trials on the validation split, then its best values are
the cell's verdict configuration, trained with the suite's seeds and tested like any grid cell.

The search is Optuna's, ask-and-tell, in the run process: one study per grid cell, all in `<results>/tuning.db`
(SQLite: embedded, nothing to start). Each round asks every cell still short of its budget for new trials; a trial
is an ordinary cell (the grid cell with the sampled values set in its recipe and components, trained on a tuning
seed that no verdict uses) that goes through the run's executor like any other, and its record is told to the study
the moment it arrives. A trial trains on the training split and is measured on the validation split only: the
engine reads nothing of the test split while tuning (a trial cell's evaluator skips it: Evaluator.evaluate_test).

Pruning: with `pruner: median` or `hyperband`, a trial reports its validation metric to the study after every
epoch (from the process that trains it: workers open the same SQLite study) and stops when the pruner says so;
its cost is the epochs it trained. Ray's workers may run on other machines without the results directory, so
`--executor ray` tunes with `pruner: none` only (the CLI refuses the combination before anything trains).

Resume: a trial is counted once told. A run killed mid-trial leaves that trial `RUNNING` in the study; the next
run marks it lost (failed, with the user attribute `lost`, not counted and not in tuning.csv) and asks its values
again, so every cell ends with exactly `trials` counted trials and no trial counts twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from lossbench.analysis.measures import measure
from lossbench.atomic_write import atomic_write_text
from lossbench.grid import Cell, TrialLink
from lossbench.record import CellRecord, Epoch
from lossbench.tuning_space import cell_paths, grid_cell_id, tuning_seeds, with_values

if TYPE_CHECKING:
    from lossbench.config.tune_schema import ParamRange, TuneConfig

STUDY_FILE = "tuning.db"
CSV_FILE = "tuning.csv"
#: How long a process waits for another's write to the study before it gives up (seconds; SQLite locks the file).
_SQLITE_TIMEOUT_S = 600
#: Trials of a study that count against the budget, and how each appears in tuning.csv.
_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


def storage_url(results_dir: Path) -> str:
    """The SQLite URL of a results directory's study file."""
    return f"sqlite:///{(Path(results_dir) / STUDY_FILE).resolve()}"


def _storage(url: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": _SQLITE_TIMEOUT_S}})


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """The pruner of `tune.pruner`; epochs are the resource.

    median: after epoch 2 or later, a trial stops when its metric is worse than the median of earlier trials at
    that epoch, once 3 trials have finished. hyperband: Li et al. 2018, from 1 to `epochs` epochs, halving by 3."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def make_sampler(tune: TuneConfig, space: dict[str, ParamRange], draw: int) -> optuna.samplers.BaseSampler:
    """The sampler that asks trial number `draw` of a cell.

    A sampler reads the study's history from storage; only its random state lives in memory. Seeding it from
    (tune.seed, draw) makes each ask depend on the history and the seed alone, so a resumed study asks what an
    uninterrupted one would, and every cell draws the same random points (its search is paired with the others').
    QMC indexes its sequence by trial number itself and keeps the one seed."""
    seed = tune.seed if tune.sampler == "qmc" else (tune.seed * 1_000_003 + draw) % 2**32
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tune.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if tune.sampler == "grid":
        return _GridSampler({p: _grid_values(r) for p, r in space.items()}, seed=tune.seed)
    # Optuna's default of 10 random trials first is meant for hundreds of trials; a few dozen need fewer.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, tune.trials // 2)))


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, minus its `study.stop()` once the grid is covered: that call is for `optimize`
    loops, and the budget here is `tune.trials` (validation keeps it within the grid)."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        return None


def _grid_values(spec: ParamRange) -> list[Any]:
    return list(spec.choices) if spec.choices is not None else list(range(int(spec.low), int(spec.high) + 1))


def distribution(spec: ParamRange) -> BaseDistribution:
    """The Optuna distribution of one range."""
    if spec.choices is not None:
        return CategoricalDistribution(spec.choices)
    if spec.is_int:
        return IntDistribution(int(spec.low), int(spec.high), log=spec.log)
    return FloatDistribution(float(spec.low), float(spec.high), log=spec.log)


def epoch_reporter(link: TrialLink) -> Callable[[Epoch], bool] | None:
    """For the process that trains a trial: report the metric after each epoch; True when the pruner stops it.

    None without a pruner (nothing is reported: the trial's record carries its history)."""
    if link.pruner == "none":
        return None
    study = optuna.load_study(study_name=link.study, storage=_storage(link.storage),
                              pruner=make_pruner(link.pruner, link.epochs))
    trial = optuna.trial.Trial(study, link.trial_id)

    def should_stop(record: Epoch) -> bool:
        value = getattr(record, link.metric)
        if value is None or not math.isfinite(value):
            return False
        trial.report(value, record.epoch)
        return trial.should_prune()

    return should_stop


@dataclass
class CellStudy:
    """One grid cell's study: its verdict cells (one per seed), the paths it tunes, and the Optuna study."""

    key: str
    cells: list[Cell]
    paths: list[str]
    study: optuna.Study
    #: Trials asked in this round and not yet told: Optuna trial number → trial.
    asked: dict[int, optuna.trial.Trial] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.cells[0].label

    def counted(self) -> list[FrozenTrial]:
        """The trials that count against the budget, in the order they were asked."""
        return [t for t in self.study.get_trials(deepcopy=False, states=tuple(_STATES))
                if not t.user_attrs.get("lost")]


#: Hands back a trial's record, the moment it finished.
OnTrial = Callable[[Cell, CellRecord], None]
#: Trains a round of trial cells wherever the run's executor puts them, calling back once per trial.
TrainTrials = Callable[[list[Cell], OnTrial], None]


@dataclass
class TuningOutcome:
    """What tuning decided: the verdict cells (tuned values in place), and why the cells of grid points that no
    trial completed failed (cell, one-line error)."""

    cells: list[Cell]
    failed: list[tuple[Cell, str]]
    trials_run: int


class Tuner:
    """Drives the studies of one suite's grid cells in one results directory."""

    def __init__(self, tune: TuneConfig, cells: list[Cell], results_dir: Path, epochs: int, seed_list: list[int]):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.tune = tune
        self.epochs = epochs
        # Every tuning metric (config/tune_schema.py) has a known direction.
        self.direction = "maximize" if measure(tune.metric).higher_is_better else "minimize"
        self.seeds = tuning_seeds(seed_list)
        self.url = storage_url(results_dir)
        self.results_dir = Path(results_dir)
        storage = _storage(self.url)
        groups: dict[str, list[Cell]] = {}
        for cell in cells:
            groups.setdefault(grid_cell_id(cell), []).append(cell)
        fingerprint = self._fingerprint()
        self.studies = [
            CellStudy(key, group, cell_paths(group[0], tune.space), optuna.create_study(
                study_name=f"{key}-{fingerprint}", storage=storage, load_if_exists=True, direction=self.direction,
                pruner=make_pruner(tune.pruner, epochs)))
            for key, group in groups.items()
        ]

    def _fingerprint(self) -> str:
        """What a study's trials depend on besides the grid cell: a change here starts new studies; `trials` does
        not (a larger budget continues the study)."""
        plain = {"metric": self.tune.metric, "sampler": self.tune.sampler, "pruner": self.tune.pruner,
                 "seed": self.tune.seed, "seeds": self.seeds,
                 "space": {p: r.model_dump() for p, r in self.tune.space.items()}}
        return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:8]

    # -- resume ----------------------------------------------------------------------------------------------------

    def recover(self) -> int:
        """Trials a killed run left running: marked lost (not counted) and their values asked again. Returns how
        many."""
        lost = 0
        for cs in self.studies:
            for trial in cs.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                cs.study._storage.set_trial_user_attr(trial._trial_id, "lost", True)
                cs.study.tell(trial.number, state=TrialState.FAIL)
                cs.study.enqueue_trial(trial.params, user_attrs={"retries": trial.number})
                lost += 1
        return lost

    def left(self, cs: CellStudy) -> int:
        """Trials this cell still needs (beyond those asked and not yet told)."""
        return max(self.tune.trials - len(cs.counted()) - len(cs.asked), 0)

    def trials_left(self) -> int:
        return sum(self.left(cs) for cs in self.studies)

    # -- the rounds ------------------------------------------------------------------------------------------------

    def ask_round(self, concurrency: int) -> list[Cell]:
        """New trial cells: up to ceil(concurrency / cells still short) per cell, at least one each."""
        active = [cs for cs in self.studies if self.left(cs) > 0]
        if not active:
            return []
        per = max(1, math.ceil(concurrency / len(active)))
        batch = []
        for cs in active:
            for _ in range(min(per, self.left(cs))):
                batch.append(self._ask(cs))
        return batch

    def _ask(self, cs: CellStudy) -> Cell:
        space = {p: self.tune.space[p] for p in cs.paths}
        draw = len(cs.counted()) + len(cs.asked)
        cs.study.sampler = make_sampler(self.tune, space, draw)
        trial = cs.study.ask({p: distribution(r) for p, r in space.items()})
        cs.asked[trial.number] = trial
        link = TrialLink(self.url, cs.study.study_name, trial._trial_id, self.tune.metric, self.tune.pruner,
                         self.epochs, trial.number)
        return replace(with_values(cs.cells[0], trial.params, self.seeds[0]), trial=link)

    def tell(self, cell: Cell, record: CellRecord) -> None:
        """Record a finished trial in its study: complete, pruned (stopped before its last epoch) or failed."""
        assert cell.trial is not None
        cs = next(s for s in self.studies if s.study.study_name == cell.trial.study)
        trial = next(t for t in cs.asked.values() if t._trial_id == cell.trial.trial_id)
        epochs = int(record.timing.epochs_run or len(record.history))
        # Only a finished trial has a value: a diverged one's last epoch is no result.
        value = record.value(self.tune.metric) if record.status == "done" else None
        storage = cs.study._storage
        storage.set_trial_user_attr(trial._trial_id, "epochs", epochs)
        storage.set_trial_user_attr(trial._trial_id, "status", record.status)
        if record.error_line:
            storage.set_trial_user_attr(trial._trial_id, "error", record.error_line)
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        if finite:
            storage.set_trial_user_attr(trial._trial_id, "value", float(value))
        if record.status != "done" or not finite:
            cs.study.tell(trial, state=TrialState.FAIL)
        elif epochs < self.epochs:
            cs.study.tell(trial, state=TrialState.PRUNED)
        else:
            cs.study.tell(trial, float(value))
        cs.asked.pop(trial.number, None)

    def abandon_untold(self) -> None:
        """Trials an executor returned without a record: failed, so that the loop cannot ask forever."""
        for cs in self.studies:
            for number, trial in list(cs.asked.items()):
                cs.study._storage.set_trial_user_attr(trial._trial_id, "error", "the executor returned no result")
                cs.study.tell(trial, state=TrialState.FAIL)
                del cs.asked[number]

    # -- results ---------------------------------------------------------------------------------------------------

    def write_csv(self) -> Path:
        """tuning.csv: one row per counted trial, cells in grid order, trials in the order they were asked."""
        paths = list(self.tune.space)
        columns = ["cell", "cell_id", "trial", "state", *paths, self.tune.metric, "epochs"]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for cs in self.studies:
            for index, t in enumerate(cs.counted()):
                writer.writerow({"cell": cs.label, "cell_id": cs.key, "trial": index, "state": _STATES[t.state],
                                 **{p: t.params.get(p) for p in paths},
                                 self.tune.metric: t.user_attrs.get("value"), "epochs": t.user_attrs.get("epochs", 0)})
        path = self.results_dir / CSV_FILE
        atomic_write_text(path, buf.getvalue())
        return path

    def outcome(self) -> TuningOutcome:
        """The verdict cells of every grid cell whose study has a complete trial; why the others failed."""
        cells: list[Cell] = []
        failed: list[tuple[Cell, str]] = []
        for cs in self.studies:
            counted = cs.counted()
            complete = [(i, t) for i, t in enumerate(counted) if t.state == TrialState.COMPLETE]
            if not complete:
                states = ", ".join(f"{sum(t.state == s for t in counted)} {name}" for s, name in _STATES.items())
                failed.extend((c, f"no tuning trial of this cell completed ({states}); see {CSV_FILE} and "
                                  f"{STUDY_FILE}") for c in cs.cells)
                continue
            sign = 1.0 if self.direction == "maximize" else -1.0
            index, best = max(complete, key=lambda it: (sign * float(it[1].value), -it[0]))
            tuned = {
                "study": cs.study.study_name, "cell_id": cs.key, "trial": index, "trials": self.tune.trials,
                "epochs": sum(int(t.user_attrs.get("epochs", 0)) for t in counted), "metric": self.tune.metric,
                "direction": self.direction, "value": float(best.value), "params": dict(best.params),
                "tuning_seeds": list(self.seeds), "sampler": self.tune.sampler, "pruner": self.tune.pruner,
            }
            cells.extend(with_values(c, best.params, c.seed, tuned) for c in cs.cells)
        return TuningOutcome(cells, failed, 0)


def run_tuning(tuner: Tuner, train: TrainTrials, concurrency: int,
               on_trial: OnTrial = lambda cell, record: None) -> TuningOutcome:
    """Ask, train and tell until every cell has its budget; then the verdict cells.

    `train` trains a round of trial cells (the runner's executor); `concurrency` is how many cells it trains at
    once, the trials asked per round; `on_trial` sees each trial's record after its study was told."""
    ran = 0

    def on_result(cell: Cell, record: CellRecord) -> None:
        nonlocal ran
        tuner.tell(cell, record)
        ran += 1
        tuner.write_csv()
        on_trial(cell, record)

    tuner.write_csv()
    while batch := tuner.ask_round(concurrency):
        train(batch, on_result)
        tuner.abandon_untold()
    tuner.write_csv()
    outcome = tuner.outcome()
    outcome.trials_run = ran
    return outcome
