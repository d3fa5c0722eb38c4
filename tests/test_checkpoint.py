"""Checkpoints: the final weights a run saves (checkpoints/<cell-id>.pt), what `keep` keeps, and the checks of
`train.checkpoint` before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lossbench.checkpoint import CheckpointError, checkpoint_path, load_final, save_final
from lossbench.cli import app
from lossbench.components import build_cell
from lossbench.suite import load_suite
from lossbench.evaluate import evaluator_for
from lossbench.device import Normalizer
from lossbench.grid import expand
from lossbench.data.request import DataRequest
from lossbench.execution import EngineSettings
from lossbench.store import ResultsStore

from conftest import TINY_SUITE

runner = CliRunner()

# Two losses: one without parameters of its own, one (arcface) with a class layer of its own, saved as `loss`.
SUITE = TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [cross_entropy, arcface]").replace(
    "augmentation: [none, crop]", "augmentation: [crop]").replace("epochs: 2", "epochs: 2\n  threads: 1")


def run(suite: Path, out: Path, cache_dir: Path, *extra: str):
    result = runner.invoke(app, ["run", str(suite), "--out", str(out), "--cache-dir", str(cache_dir), "--plain",
                                 "--no-report", *extra])
    assert result.exit_code == 0, result.output
    return result


def test_final_weights_reproduce_the_recorded_test_metrics(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    suite_path = write_suite(SUITE)
    out = tmp_path / "out"
    run(suite_path, out, cache_dir)
    store = ResultsStore(out)
    records = list(store.records())
    assert len(records) == 2
    suite = load_suite(suite_path, [])
    settings = EngineSettings.from_suite(suite)
    options = settings.options()
    request = DataRequest.from_suite(suite, cache_dir)
    data = request.load()
    cells = {c.id: c for c in expand(suite, request.identity())}
    for record in records:
        saved = load_final(checkpoint_path(out, record.id))
        assert saved["format"] == 1 and saved["epoch"] == 2
        assert saved["config"] == record.config
        # A fresh model of the cell (other weights: built with another seed) given the saved weights measures
        # exactly the test metrics the run recorded: the file holds the trained model and loss.
        cell = cells[record.id]
        parts = build_cell(cell, data, options)
        untrained = {k: v.clone() for k, v in parts.model.state_dict().items()}
        parts.model.load_state_dict(saved["model"])
        parts.loss.load_state_dict(saved["loss"])
        assert any(not torch.equal(untrained[k], saved["model"][k]) for k in untrained)
        evaluator = evaluator_for(parts.loss, parts.data, Normalizer(parts.data, options.device,
                                                                     options.channels_last), options,
                                  batch_size=cell.recipe.batch_size, eval_batch_size=cell.recipe.eval_batch_size)
        metrics = evaluator.final(parts.model)
        assert metrics["test_acc"] == record.metrics.test_acc
        assert metrics["test_nll"] == record.metrics.test_nll
    arcface = next(r for r in records if r.axes["loss"].startswith("arcface"))
    assert load_final(checkpoint_path(out, arcface.id))["loss"], "arcface's class weights are saved with it"
    assert not list((out / "checkpoints").glob(".*.tmp"))


def test_keep_none_saves_nothing_and_a_rerun_drops_stale_weights(write_suite, tmp_path: Path,
                                                                 cache_dir: Path) -> None:
    out = tmp_path / "out"
    suite = write_suite(SUITE.replace("loss: [cross_entropy, arcface]", "loss: [cross_entropy]"))
    run(suite, out, cache_dir, "--epochs", "1")
    (cell_file,) = (out / "cells").glob("*.json")
    assert checkpoint_path(out, cell_file.stem).is_file()
    # Trained again, keeping nothing: the weights of the earlier training do not stay beside the new result.
    run(suite, out, cache_dir, "--epochs", "1", "--force", "train.checkpoint.keep=none")
    assert not checkpoint_path(out, cell_file.stem).exists()


def test_save_and_load_final_round_trip(tmp_path: Path) -> None:
    model, loss = torch.nn.Linear(3, 2), torch.nn.Linear(2, 2)
    path = checkpoint_path(tmp_path, "abc")
    save_final(path, model, loss, {"seed": 1, "loss": {"name": "x"}}, 7)
    saved = load_final(path)
    assert saved["epoch"] == 7 and saved["config"] == {"seed": 1, "loss": {"name": "x"}}
    assert torch.equal(saved["model"]["weight"], model.weight) and torch.equal(saved["loss"]["bias"], loss.bias)


@pytest.mark.parametrize("content", [b"", b"not a torch file", None])
def test_load_final_refuses_what_is_not_a_checkpoint(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "x.pt"
    if content is None:
        torch.save({"format": 99, "model": {}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_final(path)
    assert str(path) in info.value.message
    with pytest.raises(CheckpointError, match="does not exist"):
        load_final(tmp_path / "missing.pt")


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": {}, "loss": {}, "config": {}, "epoch": 1, "x": Path("/")}, path)
    with pytest.raises(CheckpointError):
        load_final(path)  # weights_only: an arbitrary class in the file is not unpickled


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("train.checkpoint.keep=best", ["'best' is not allowed", "final", "last", "none", "train.checkpoint.keep"]),
        ("train.checkpoint.every=-1", ["train.checkpoint.every", "-1"]),
        ("train.checkpoint.evry=2", ["unknown key 'evry'", "did you mean 'every'"]),
    ],
)
def test_bad_checkpoint_settings_exit_2_before_training(write_suite, tmp_path: Path, override: str,
                                                        needles: list[str]) -> None:
    out = tmp_path / "out"
    for command in ("validate", "run"):
        args = [command, str(write_suite(SUITE)), override] + (["--out", str(out)] if command == "run" else [])
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        for needle in needles:
            assert needle in result.output, result.output
    assert not out.exists()


def test_mid_cell_checkpoints_and_packs_are_refused_at_the_setting(write_suite) -> None:
    suite = write_suite(SUITE.replace("  threads: 1", "  threads: 1\n  checkpoint: {every: 1}"))
    result = runner.invoke(app, ["validate", str(suite), "train.pack=2"])
    assert result.exit_code == 2, result.output
    assert "train.checkpoint.every" in result.output and "suite.yaml:" in result.output
    assert "train.pack" in result.output
    assert runner.invoke(app, ["validate", str(suite)]).exit_code == 0
    last = runner.invoke(app, ["validate", str(write_suite(SUITE)), "train.pack=2", "train.checkpoint.keep=last"])
    assert last.exit_code == 2 and "train.checkpoint.keep" in last.output, last.output


def test_validate_shows_the_disk_the_checkpoints_take(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    suite_path = write_suite(SUITE)
    shown = runner.invoke(app, ["validate", str(suite_path)])
    assert shown.exit_code == 0 and "final weights, 2 cell(s) ×" in shown.output, shown.output
    out = tmp_path / "out"
    run(suite_path, out, cache_dir, "--epochs", "1")
    from lossbench.checkpoint import estimate_sizes

    suite = load_suite(suite_path, [])
    cells = expand(suite, DataRequest.from_suite(suite, cache_dir).identity())
    estimate = estimate_sizes(suite, cells)
    on_disk = sum(p.stat().st_size for p in (out / "checkpoints").glob("*.pt"))
    # The files hold the weights plus the config and torch's zip framing: a few kB per file.
    assert estimate is not None and estimate.final < on_disk < estimate.final + 2 * 20_000
    weights_only = estimate_sizes(suite, cells, with_state=False)  # what validate sizes when no state is kept
    assert weights_only is not None and weights_only.final == estimate.final
    assert weights_only.state == estimate.final < estimate.state


def test_keep_last_keeps_the_final_training_state_and_force_starts_over(write_suite, tmp_path: Path,
                                                                         cache_dir: Path) -> None:
    from lossbench.checkpoint import load_training, resume_path

    out = tmp_path / "out"
    suite = write_suite(SUITE.replace("loss: [cross_entropy, arcface]", "loss: [cross_entropy]"))
    run(suite, out, cache_dir, "train.checkpoint.keep=last")
    (record,) = ResultsStore(out).records()
    state = load_training(resume_path(out, record.id).read_bytes(), "state")
    assert state["epoch"] == 2 and [h["test_acc"] for h in state["history"]] == [
        h.test_acc for h in record.history]
    assert torch.equal(next(iter(state["model"].values())),
                       next(iter(load_final(checkpoint_path(out, record.id))["model"].values())))
    # --force trains from the first epoch: the state kept after the last epoch is not resumed from.
    run(suite, out, cache_dir, "train.checkpoint.keep=last", "--force")
    (again,) = ResultsStore(out).records()
    assert again.timing.resumed_after_epoch is None and again.history[0].test_acc == record.history[0].test_acc


def test_packs_save_final_weights_per_cell(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "out"
    suite = write_suite(SUITE.replace("loss: [cross_entropy, arcface]", "loss: [cross_entropy, mse]"))
    result = run(suite, out, cache_dir, "--epochs", "1", "--pack", "2")
    records = list(ResultsStore(out).records())
    assert len(records) == 2 and all("pack of 2" in " ".join(r.notes) for r in records), result.output
    weights = [load_final(checkpoint_path(out, r.id))["model"] for r in records]
    assert weights[0].keys() == weights[1].keys()
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_damaged_saved_state_is_trained_over_and_stale_temp_files_go(write_suite, tmp_path: Path,
                                                                        cache_dir: Path) -> None:
    from lossbench.checkpoint import resume_path
    from lossbench.runner import plan

    out = tmp_path / "out"
    suite = write_suite(SUITE.replace("loss: [cross_entropy, arcface]", "loss: [cross_entropy]"))
    with ResultsStore(out):  # the directory of an earlier run
        pass
    (cell,) = plan(load_suite(suite, []), out, cache_dir=cache_dir).cells
    resume_path(out, cell.id).parent.mkdir()
    resume_path(out, cell.id).write_bytes(b"damaged")
    stale = out / "checkpoints" / f".{cell.id}.resume.pt.x1y2.tmp"  # a write cut short by a kill
    stale.write_bytes(b"half")
    run(suite, out, cache_dir, "train.checkpoint.every=1")
    (record,) = ResultsStore(out).records()
    assert record.status == "done" and record.timing.resumed_after_epoch is None
    assert any(n.startswith("trained from its first epoch: cannot read its saved training state") for n in record.notes)
    assert not stale.exists() and not resume_path(out, cell.id).exists()
