"""Equal-budget tuning on real data (8×8 digits): the `tune:` block's validation, trials as cells, the study's
bookkeeping (exact budgets, resume after a kill), pruning, and the test split never read while tuning."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import optuna
import pytest
import torch
from typer.testing import CliRunner

from conftest import run_and_kill_after
from lossbench.cli import app
from lossbench.analysis.measures import measure
from lossbench.config.tune_schema import TuneConfig
from lossbench.suite import load_suite
from lossbench.errors import ConfigError, SuiteErrors
from lossbench.grid import expand
from lossbench.execution import LocalExecutor
from lossbench.runner import plan, run
from lossbench.tuning_space import TUNING_SEED_BASE, grid_cell_id, parse_path, with_values

TUNED = """\
name: tuned
dataset:
  name: digits
  train_subset: 400
  val_fraction: 0.25
model:
  name: small_cnn
train:
  epochs: 2
  batch_size: 64
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
  device: cpu
  threads: 1
seeds: [0, 1]
tune:
  trials: 3
  metric: val_acc
  sampler: tpe
  pruner: none
  seed: 0
  space:
    train.optimizer.lr: {low: 1.0e-3, high: 0.5, log: true}
    loss.gamma: {low: 0.0, high: 4.0}
grid:
  loss: [cross_entropy, focal]
"""


def errors_of(path: Path) -> list[ConfigError]:
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    exc = info.value
    return exc.errors if isinstance(exc, SuiteErrors) else [exc]


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "tuning.csv", newline="") as f:
        return list(csv.DictReader(f))


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]


# -- the tune: block ---------------------------------------------------------------------------------------------


def test_valid_block_round_trips_into_suite_yaml(write_suite) -> None:
    from lossbench.config.schema import suite_to_plain

    suite = load_suite(write_suite(TUNED))
    assert suite.tune is not None and suite.tune.trials == 3 and suite.tune.space["loss.gamma"].high == 4.0
    plain = suite_to_plain(suite)["tune"]
    assert plain["space"]["train.optimizer.lr"] == {"low": 1.0e-3, "high": 0.5, "log": True}
    assert plain["pruner"] == "none" and plain["trials"] == 3


def test_every_mistake_of_the_block_in_one_pass(write_suite) -> None:
    text = (TUNED.replace("val_fraction: 0.25", "val_fraction: 0")
            .replace("loss.gamma: {low: 0.0, high: 4.0}",
                     "loss.gama: {low: 0.0, high: 4.0}\n    optimiser.lr: {low: 0.1, high: 1.0}\n"
                     "    train.optimizer.momentum: {low: 0.9, high: 0.5}\n    train.epochs: {low: 1, high: 3}\n"
                     "    train.batch_size: {choices: [32, 0]}"))
    errors = errors_of(write_suite(text))
    messages = [e.render() for e in errors]
    text_all = "\n".join(messages)
    assert "val_fraction is 0" in text_all
    assert "loss.gama applies to no cell" in text_all and "gamma" in text_all  # did you mean
    assert "'optimiser.lr' names no tunable parameter" in text_all
    assert "low (0.9) must be below high (0.5)" in text_all
    assert "train.epochs is not tunable" in text_all
    assert "0 is not a batch size" in text_all
    assert all(e.location is not None and e.location.line for e in errors), messages


def test_range_ends_are_numbers(write_suite) -> None:
    errors = errors_of(write_suite(TUNED.replace("{low: 0.0, high: 4.0}", "{low: 1.0e6, high: true}")))
    assert [e.message for e in errors] == [
        "must be a number, got '1.0e6' (YAML reads 1.0e6 as text: write 1.0e+6)", "must be a number, got true"]


def test_a_tuned_parameter_may_not_also_be_a_grid_level(write_suite) -> None:
    errors = errors_of(write_suite(TUNED.replace("loss: [cross_entropy, focal]",
                                                 "loss: [cross_entropy, {name: focal, gamma: 2}]")))
    assert len(errors) == 1 and "grid.loss.1 sets gamma=2" in errors[0].message


def test_values_are_checked_against_the_component(write_suite) -> None:
    errors = errors_of(write_suite(TUNED.replace("loss.gamma: {low: 0.0, high: 4.0}",
                                                 "loss.gamma: {choices: [1.0, fast]}")))
    assert len(errors) == 1 and "loss.gamma = 'fast'" in errors[0].message


def test_grid_sampler_needs_points(write_suite) -> None:
    errors = errors_of(write_suite(TUNED.replace("sampler: tpe", "sampler: grid")))
    assert len(errors) == 2 and all("range of real numbers" in e.message for e in errors)
    text = TUNED.replace("sampler: tpe", "sampler: grid").replace("trials: 3", "trials: 5").replace(
        "{low: 1.0e-3, high: 0.5, log: true}", "{choices: [0.01, 0.1]}").replace(
        "{low: 0.0, high: 4.0}", "{choices: [0.0, 2.0]}")
    errors = errors_of(write_suite(text))
    assert len(errors) == 1 and "4 point(s)" in errors[0].message


def test_paths_and_values_land_in_the_cell(write_suite) -> None:
    suite = load_suite(write_suite(TUNED))
    ce, ce1, focal, _ = expand(suite, "digits")
    assert parse_path("train.batch_size").param is None
    assert grid_cell_id(ce) == grid_cell_id(ce1) != grid_cell_id(focal)
    tuned = with_values(focal, {"train.optimizer.lr": 0.2, "loss.gamma": 3.5, "train.batch_size": 32}, 7)
    assert tuned.config["optimizer"]["params"]["lr"] == 0.2 == tuned.optimizer.params["lr"]
    assert tuned.config["loss"]["params"]["gamma"] == 3.5 == tuned.loss.params["gamma"]
    assert tuned.config["train"]["batch_size"] == 32 == tuned.recipe.batch_size and tuned.seed == 7 == tuned.config["seed"]
    assert tuned.label == focal.label and tuned.axes == focal.axes and tuned.id != focal.id
    assert focal.config["optimizer"]["params"]["lr"] == 0.05  # the grid cell is untouched
    # cross_entropy has no gamma: the path does not apply, nothing is added.
    assert "gamma" not in with_values(ce, {"loss.gamma": 3.5}, 0).config["loss"]["params"]


# -- a whole tuned run ----------------------------------------------------------------------------------------------


def test_tuned_run_budgets_files_and_seeds(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    suite = load_suite(write_suite(TUNED))
    out = tmp_path / "out"
    summary = run(plan(suite, out, cache_dir=cache_dir))
    assert summary.trials == 6 and summary.ran == 4 and summary.failed == 0
    table = rows(out)
    assert list(table[0]) == ["cell", "cell_id", "trial", "state", "train.optimizer.lr", "loss.gamma", "val_acc",
                              "epochs"]
    by_cell: dict[str, list[dict[str, str]]] = {}
    for row in table:
        by_cell.setdefault(row["cell"], []).append(row)
    assert {k: [r["trial"] for r in v] for k, v in by_cell.items()} == {
        "cross_entropy | none | none": ["0", "1", "2"], "focal | none | none": ["0", "1", "2"]}
    assert all(r["state"] == "complete" and r["epochs"] == "2" for r in table)
    assert all(r["loss.gamma"] == "" for r in by_cell["cross_entropy | none | none"])
    assert all(r["loss.gamma"] != "" for r in by_cell["focal | none | none"])
    finals = records(out)
    assert len(finals) == 4 and sorted(r["seed"] for r in finals) == [0, 0, 1, 1]
    results_csv = (out / "results.csv").read_text().splitlines()
    assert len(results_csv) == 5  # the final cells only: trials are not cell results
    for record in finals:
        tuned = record["config"]["tuned"]
        assert record["label"] in by_cell and record["status"] == "done"
        assert set(tuned) == {"study", "cell_id", "trial", "trials", "epochs", "metric", "direction", "value",
                              "params", "tuning_seeds", "sampler", "pruner"}
        assert tuned["trials"] == 3 and tuned["epochs"] == 6 and tuned["metric"] == "val_acc"
        assert tuned["tuning_seeds"] == [TUNING_SEED_BASE] and record["seed"] not in tuned["tuning_seeds"]
        chosen = by_cell[record["label"]][tuned["trial"]]
        assert chosen["cell_id"] == tuned["cell_id"]
        assert float(chosen["val_acc"]) == tuned["value"] == max(float(r["val_acc"]) for r in by_cell[record["label"]])
        assert float(chosen["train.optimizer.lr"]) == tuned["params"]["train.optimizer.lr"] \
            == record["config"]["optimizer"]["params"]["lr"]
        if record["label"].startswith("focal"):
            assert tuned["params"]["loss.gamma"] == record["config"]["loss"]["params"]["gamma"]
        assert "test_acc" in record["metrics"]
    # The same command again: everything is done, nothing is asked or trained.
    from lossbench.progress import SilentDisplay

    class Start(SilentDisplay):
        def start(self, total: int, skipped: int) -> None:
            self.args = (total, skipped)

    display = Start()
    again = run(plan(suite, out, cache_dir=cache_dir), display=display)
    assert again.trials == 0 and again.ran == 0 and again.skipped == 4
    assert display.args == (0, 4)  # the display is told the verdict cells are done, not a grid to run
    assert rows(out) == table
    # A larger budget continues the same studies: the first trials are kept as they were.
    bigger = load_suite(write_suite(TUNED.replace("trials: 3", "trials: 4"), name="bigger.yaml"))
    more = run(plan(bigger, out, cache_dir=cache_dir))
    assert more.trials == 2 and [r for r in rows(out) if r["trial"] != "3"] == table


class _Untouchable(torch.Tensor):
    """A tensor whose values may not be read: moving it and asking its shape are allowed, anything else raises."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in (torch.Tensor.to,):
            return args[0]
        if func in (torch.Tensor.shape.__get__, torch.Tensor.size, torch.Tensor.dim):  # type: ignore[attr-defined]
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {}))
        raise RuntimeError(f"the test split was read ({getattr(func, '__name__', func)})")


def test_tuning_never_reads_the_test_split(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    suite = load_suite(write_suite(TUNED.replace("seeds: [0, 1]", "seeds: [0]")))
    run_plan = plan(suite, tmp_path / "out", cache_dir=cache_dir)
    data = run_plan.job.data.load()
    poisoned = replace(data, test_x=data.test_x.as_subclass(_Untouchable),
                       test_y=data.test_y.as_subclass(_Untouchable))
    summary = run(run_plan, executor=LocalExecutor(poisoned))
    table = rows(tmp_path / "out")
    assert summary.trials == 6 and len(table) == 6 and all(r["state"] == "complete" for r in table)
    # The verdict does read it (that is its job), which proves the poison works.
    finals = records(tmp_path / "out")
    assert len(finals) == 2 and all(r["status"] == "failed" and "test split was read" in r["error"] for r in finals)


# -- the study: resume and pruning ------------------------------------------------------------------------------------


def test_a_trial_in_flight_at_a_kill_is_asked_again_and_counted_once(write_suite, tmp_path: Path) -> None:
    from lossbench.tune import Tuner

    suite = load_suite(write_suite(TUNED))
    assert suite.tune is not None
    cells = expand(suite, "digits")
    first = Tuner(suite.tune, cells, tmp_path, 2, suite.seed_list)
    asked = first.ask_round(1)  # one trial per cell, asked, never told: the process dies here
    assert len(asked) == 2
    second = Tuner(suite.tune, cells, tmp_path, 2, suite.seed_list)
    assert second.recover() == 2 and second.trials_left() == 6
    retry = second.ask_round(1)
    for old, new in zip(asked, retry):  # the same values, asked again
        assert (new.config["optimizer"], new.config["loss"]) == (old.config["optimizer"], old.config["loss"])
    for cs in second.studies:
        lost = [t for t in cs.study.get_trials() if t.user_attrs.get("lost")]
        assert len(lost) == 1 and lost[0].state == optuna.trial.TrialState.FAIL
        assert cs.counted() == []  # the lost trial is not counted


def test_the_tuner_drives_any_trainer_of_trial_rounds(write_suite, tmp_path: Path) -> None:
    """run_tuning needs no runner and no executor: a function that trains a round of trials (here it trains
    nothing) gets rounds of one trial per grid cell at concurrency 2, and every grid cell its exact budget."""
    from lossbench.record import CellRecord, Metrics, Timings
    from lossbench.tune import Tuner, run_tuning

    suite = load_suite(write_suite(TUNED))
    assert suite.tune is not None
    tuner = Tuner(suite.tune, expand(suite, "digits"), tmp_path, 2, suite.seed_list)
    rounds: list[int] = []
    seen: list[str] = []

    def train(trials: list[Any], on_trial: Any) -> None:
        rounds.append(len(trials))
        for cell in trials:
            number = cell.trial.number  # the later the trial, the better
            on_trial(cell, CellRecord(cell.id, cell.label, cell.seed, "done", cell.axes,
                                      metrics=Metrics(val_acc=0.5 + number / 100), timing=Timings(epochs_run=2)))

    outcome = run_tuning(tuner, train, 2, lambda cell, record: seen.append(record.id))
    assert rounds == [2, 2, 2] and outcome.trials_run == 6 == len(seen) and outcome.failed == []
    assert len(outcome.cells) == 4  # two grid cells × two seeds, each with its best trial's values
    assert all(c.tuned["trial"] == 2 and c.tuned["value"] == 0.52 for c in outcome.cells)
    assert len(rows(tmp_path)) == 6


def test_sigkill_mid_tuning_then_resume(write_suite, tmp_path: Path, cli_env: dict[str, str]) -> None:
    suite = write_suite(TUNED.replace("seeds: [0, 1]", "seeds: [0]"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "lossbench", "run", str(suite), "--out", str(out), "--plain", "--no-report"]
    done_lines = run_and_kill_after(command, cli_env, finished=2)
    assert done_lines == 2
    before = rows(out)
    assert 2 <= len(before) <= 3  # the kill may land just after a third trial was told
    # The resume reads the study and the files: in this process.
    resumed = CliRunner().invoke(app, [*command[3:], "--cache-dir", cli_env["LOSSBENCH_CACHE"]])
    assert resumed.exit_code == 0, resumed.output
    after = rows(out)
    assert len(after) == 6
    assert sorted((r["cell_id"], r["trial"]) for r in after) == sorted(
        (c, str(t)) for c in {r["cell_id"] for r in after} for t in range(3))
    assert all(row in after for row in before)  # told trials are kept as they were, never retrained
    assert len(records(out)) == 2


def _record(epoch: int, val_acc: float) -> Any:
    from lossbench.record import Epoch

    return Epoch(epoch=epoch, train_loss=1.0, lr=0.1, epoch_s=0.0, val_acc=val_acc)


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_a_trial_worse_than_its_peers_is_stopped(tmp_path: Path, pruner: str) -> None:
    """Reported the way a worker reports (from the study in storage): peers at 0.9 every epoch, then a trial at 0.1."""
    from lossbench.grid import TrialLink
    from lossbench.tune import epoch_reporter, make_pruner, storage_url

    url = storage_url(tmp_path)
    study = optuna.create_study(study_name="s", storage=url, direction="maximize", pruner=make_pruner(pruner, 9))
    for _ in range(6):
        trial = study.ask()
        stop = epoch_reporter(TrialLink(url, "s", trial._trial_id, "val_acc", pruner, 9, trial.number))
        assert stop is not None
        for epoch in range(1, 10):
            if stop(_record(epoch, 0.9)):
                break
        study.tell(trial, 0.9)
    trial = study.ask()
    stop = epoch_reporter(TrialLink(url, "s", trial._trial_id, "val_acc", pruner, 9, trial.number))
    assert stop is not None
    stopped_at = next((e for e in range(1, 10) if stop(_record(e, 0.1))), None)
    assert stopped_at is not None and stopped_at < 9
    assert epoch_reporter(TrialLink(url, "s", trial._trial_id, "val_acc", "none", 9, trial.number)) is None


def test_pruned_trials_are_recorded_with_the_epochs_they_trained(write_suite, tmp_path: Path,
                                                                  cache_dir: Path) -> None:
    """Learning rates from 1e-5 to 0.3 for 4 epochs: with median pruning, trials after the first three that fall
    below the median of the finished ones stop early, and their cost is the epochs they trained."""
    text = (TUNED.replace("epochs: 2", "epochs: 4").replace("pruner: none", "pruner: median")
            .replace("trials: 3", "trials: 6").replace("loss: [cross_entropy, focal]", "loss: [cross_entropy]")
            .replace("seeds: [0, 1]", "seeds: [0]").replace("    loss.gamma: {low: 0.0, high: 4.0}\n", "")
            .replace("sampler: tpe", "sampler: grid")
            .replace("{low: 1.0e-3, high: 0.5, log: true}", "{choices: [1.0e-5, 0.3, 0.2, 0.25, 2.0e-5, 0.1]}"))
    out = tmp_path / "out"
    run(plan(load_suite(write_suite(text)), out, cache_dir=cache_dir))
    table = rows(out)
    assert len(table) == 6
    pruned = [r for r in table if r["state"] == "pruned"]
    complete = [r for r in table if r["state"] == "complete"]
    assert pruned and all(int(r["epochs"]) < 4 for r in pruned) and all(r["epochs"] == "4" for r in complete)
    assert all(r["trial"] not in ("0", "1", "2") for r in pruned)  # three finished trials before any stops
    assert max(float(r["val_acc"]) for r in pruned) < max(float(r["val_acc"]) for r in complete)
    tuned = records(out)[0]["config"]["tuned"]
    assert tuned["epochs"] == sum(int(r["epochs"]) for r in table) and tuned["pruner"] == "median"


def test_with_jobs_workers_report_every_epoch_to_the_study(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    """--jobs 2 with hyperband: each worker process writes its trial's epochs into the study file (the pruner
    reads them there), and the budgets come out exact."""
    from lossbench.parallel import ProcessExecutor
    from lossbench.tune import storage_url

    text = TUNED.replace("pruner: none", "pruner: hyperband").replace("epochs: 2", "epochs: 3")
    out = tmp_path / "out"
    summary = run(plan(load_suite(write_suite(text)), out, cache_dir=cache_dir),
                  executor=ProcessExecutor(2, threads_per_job=1))
    assert summary.trials == 6 and summary.ran == 4 and summary.failed == 0
    table = rows(out)
    assert sorted((r["cell"], r["trial"]) for r in table) == sorted(
        (cell, str(t)) for cell in ("cross_entropy | none | none", "focal | none | none") for t in range(3))
    for summary_name in optuna.get_all_study_names(storage_url(out)):
        study = optuna.load_study(study_name=summary_name, storage=storage_url(out))
        for trial in study.get_trials():
            epochs = trial.user_attrs["epochs"]
            assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
            assert trial.intermediate_values[epochs] == trial.user_attrs["value"]


def test_adaptive_seeds_judge_the_tuned_cells(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    """The verdict's seeds may be the adaptive form: its rounds run on the tuned cells, paired on the seed."""
    text = (TUNED.replace("seeds: [0, 1]", "seeds: {min: 2, max: 3, target: {half_width: 0.001}}")
            .replace("trials: 3", "trials: 2"))
    suite = load_suite(write_suite(text))
    out = tmp_path / "out"
    summary = run(plan(suite, out, cache_dir=cache_dir))
    assert summary.trials == 4 and summary.ran == 6  # a target nobody reaches: both cells run to max
    assert sorted((r.label, r.seed) for r in summary.records) == [
        (label, s) for label in ("cross_entropy | none | none", "focal | none | none") for s in (0, 1, 2)]
    assert all("tuned" in r.config for r in summary.records)
    seeds = {s for r in summary.records for s in r.config["tuned"]["tuning_seeds"]}
    assert seeds == {TUNING_SEED_BASE} and not seeds & {r.seed for r in summary.records}


def test_a_cell_whose_trials_all_fail_gets_failed_verdicts_that_say_why(write_suite, tmp_path: Path,
                                                                       cache_dir: Path) -> None:
    """Learning rates of 1e6 and more diverge in the first epoch: no trial completes, so there is no configuration
    to judge; the verdict cells are recorded failed (a run that ends with failures exits 1), pointing at tuning.csv."""
    text = (TUNED.replace("{low: 1.0e-3, high: 0.5, log: true}", "{low: 1.0e+6, high: 1.0e+7, log: true}")
            .replace("loss: [cross_entropy, focal]", "loss: [cross_entropy]").replace("seeds: [0, 1]", "seeds: [0]")
            .replace("trials: 3", "trials: 2").replace("    loss.gamma: {low: 0.0, high: 4.0}\n", ""))
    out = tmp_path / "out"
    summary = run(plan(load_suite(write_suite(text)), out, cache_dir=cache_dir))
    table = rows(out)
    assert [r["state"] for r in table] == ["failed", "failed"] and all(r["val_acc"] == "" for r in table)
    assert summary.failed == 1
    (record,) = records(out)
    assert record["status"] == "failed" and "no tuning trial of this cell completed (0 complete, 0 pruned, 2 failed)" \
        in record["error"] and "tuning.csv" in record["error"]


def test_every_tuning_metric_has_a_known_direction() -> None:
    """The tuner maximises or minimises each metric by its measure's direction."""
    metrics = get_args(TuneConfig.model_fields["metric"].annotation)
    assert {m: measure(m).higher_is_better for m in metrics} == {
        "val_acc": True, "val_top5": True, "val_nll": False, "val_ece": False, "val_loss": False}
