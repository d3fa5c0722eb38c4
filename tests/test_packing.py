"""train.pack / --pack: cells that share a model train as one batched model. The batched forward and backward equal
each model's own; the smoke suite packed gives each cell the test accuracy of a sequential run within the stated
tolerance; cells that cannot be packed train alone; bad --pack values are refused before anything trains."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import REPO, TINY_SUITE
from lossbench import runner
from lossbench.suite import load_suite
from lossbench.models import MODELS, ModelFacts
from lossbench.packing import batched_forward, group_cells, stack_parameters, why_not_packable

#: A packed cell's test accuracy may differ from its sequential run's by this much (absolute): the batched kernels
#: round differently, and 12 epochs amplify that into a few test images of 359 flipping (docs/performance.md).
ACC_TOLERANCE = 0.015
#: ... and the mean difference over the suite's cells stays within this (no systematic bias).
MEAN_TOLERANCE = 0.005


def _models(count: int) -> list[nn.Module]:
    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        models.append(MODELS.build("tutorial_cnn", {}).build(ModelFacts(in_channels=1, image_size=(8, 8),
                                                                         out_features=10)))
    return models


def test_the_batched_forward_and_backward_equal_each_model_alone() -> None:
    models = _models(3)
    alone = copy.deepcopy(models)
    x = torch.randn(3, 5, 1, 8, 8)
    targets = torch.randint(0, 10, (3, 5))
    out = batched_forward(models[0])(stack_parameters(models), x)
    assert out.shape == (3, 5, 10)
    # Each cell its own loss; one backward through their sum fills each model's own gradients.
    sum(nn.functional.cross_entropy(out[i], targets[i]) * (i + 1) for i in range(3)).backward()
    for i, model in enumerate(alone):
        ref = model(x[i])
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-6)
        (nn.functional.cross_entropy(ref, targets[i]) * (i + 1)).backward()
        for (name, p_packed), p_alone in zip(models[i].named_parameters(), model.parameters()):
            torch.testing.assert_close(p_packed.grad, p_alone.grad, rtol=1e-4, atol=1e-6, msg=name)


# The smoke suite's own 12 epochs run with the slow tests; the default run trains 3, the same cells, data, pack and
# checks, where rounding differences have had fewer epochs to grow.
@pytest.mark.parametrize("epochs", [pytest.param(12, marks=pytest.mark.slow), 3])
def test_packed_smoke_suite_matches_a_sequential_run(tmp_path: Path, cache_dir: Path, epochs: int) -> None:
    """The must-show of the option: suites/smoke.yaml, all 8 cells in one pack, against one cell at a time."""
    assert torch.get_num_threads() == 1  # conftest; both runs with one thread
    smoke = REPO / "suites" / "smoke.yaml"
    settings = {"device": "cpu", "epochs": epochs}
    sequential = runner.run(runner.plan(load_suite(smoke, settings=settings), tmp_path / "seq", cache_dir=cache_dir))
    packed = runner.run(runner.plan(load_suite(smoke, settings={**settings, "pack": 8}), tmp_path / "pack",
                                    cache_dir=cache_dir))
    seq = {r.id: r.to_dict() for r in sequential.records}
    assert len(packed.records) == len(seq) == 8
    diffs = []
    for record in (r.to_dict() for r in packed.records):
        alone = seq[record["id"]]  # the same cell ids: packing is how cells train, not what they are
        assert record["status"] == alone["status"] == "done"
        assert record["env"]["pack_size"] == 8
        assert any("pack of 8 cells" in note for note in record["notes"])
        diffs.append(record["metrics"]["test_acc"] - alone["metrics"]["test_acc"])
        assert abs(diffs[-1]) <= ACC_TOLERANCE, (record["label"], diffs[-1])
        assert record["metrics"]["test_nll"] == pytest.approx(alone["metrics"]["test_nll"], rel=0.1)
        # The first epoch's training loss: the same data order, augmentation, init and loss per cell.
        assert record["history"][0]["train_loss"] == pytest.approx(alone["history"][0]["train_loss"], rel=1e-3)
        assert [h["lr"] for h in record["history"]] == pytest.approx([h["lr"] for h in alone["history"]])
    assert abs(sum(diffs) / len(diffs)) <= MEAN_TOLERANCE


def test_cells_that_cannot_be_packed_train_alone(write_suite, digits) -> None:
    suite = load_suite(write_suite(TINY_SUITE.replace(
        "  loss: [cross_entropy, mse]\n  regularizer: [none]",
        "  loss: [cross_entropy, mse, {name: triplet}]\n  regularizer: [none, {name: dropout, p: 0.5}]")))
    plan = runner.plan(suite, Path("unused"))
    options = plan.job.engine.options()
    cells = plan.cells
    reasons = {c.label: why_not_packable(c, options) for c in cells}
    assert reasons["cross_entropy | none | none"] is None
    assert "dropout" in reasons["cross_entropy | dropout(p=0.5) | none"]
    assert "embedding" in reasons["triplet | none | none"]
    groups = group_cells(cells, 3, options, digits)
    assert sorted(c.id for g in groups for c in g) == sorted(c.id for c in cells)  # every cell once
    packed = [g for g in groups if len(g) > 1]
    assert [len(g) for g in packed] == [3]  # 4 packable cells (ce, mse × none × none, crop) in packs of ≤ 3
    assert all(why_not_packable(c, options) is None for g in packed for c in g)
    assert all(len(g) == 1 for g in groups if why_not_packable(g[0], options) is not None)
    assert group_cells(cells, 1, options, digits) == [[c] for c in cells]


def test_bad_pack_values_are_refused_before_anything_trains(write_suite, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lossbench.cli import app

    suite = write_suite()
    for args, message in ((["--pack", "0"], "--pack 0"), (["--pack", "2", "--jobs", "2"], "does not combine")):
        out = tmp_path / "out"
        done = CliRunner().invoke(app, ["run", str(suite), "--out", str(out), *args])
        assert done.exit_code == 2, done.output
        assert message in done.output
        assert not out.exists()


def test_losses_with_their_own_class_layer_pack_by_output_width(write_suite, tmp_path: Path, cache_dir: Path,
                                                                 digits) -> None:
    """arcface and center end the model in 128 features, cross-entropy in 10 classes: two packs, and each packed
    cell trains with its loss's own parameters as in a sequential run."""
    text = TINY_SUITE.replace("  loss: [cross_entropy, mse]", "  loss: [arcface, center, cross_entropy]").replace(
        "{name: sgd, lr: 0.05, momentum: 0.9}", "{name: adam, lr: 0.003}").replace(
        "  augmentation: [none, crop]", "  augmentation: [none]")
    plan = runner.plan(load_suite(write_suite(text)), tmp_path / "unused", cache_dir=cache_dir)
    groups = group_cells(plan.cells, 8, plan.job.engine.options(), digits)
    assert sorted(sorted(c.loss.name for c in g) for g in groups) == [["arcface", "center"], ["cross_entropy"]]
    sequential = runner.run(runner.plan(load_suite(write_suite(text)), tmp_path / "seq", cache_dir=cache_dir))
    packed = runner.run(runner.plan(load_suite(write_suite(text), settings={"pack": 8}), tmp_path / "pack",
                                    cache_dir=cache_dir))
    alone = {r.id: r for r in sequential.records}
    for record in packed.records:
        loss = record.axes["loss"]
        assert record.status == "done"
        assert (record.env.pack_size or 1) == (1 if loss == "cross_entropy" else 2)
        assert record.metrics.loss_params == alone[record.id].metrics.loss_params
        assert (record.metrics.loss_params > 0) == (loss != "cross_entropy")
        assert abs(record.metrics.test_acc - alone[record.id].metrics.test_acc) <= ACC_TOLERANCE


def test_a_pack_runs_the_engines_loop_a_diverging_cell_stops_alone(write_suite, digits) -> None:
    """The pack trains through the engine's one loop (engine.train_together): its divergence check stops the
    diverging cell in its first epoch while the other cell of the pack trains on to the end."""
    from lossbench.device import EngineOptions
    from lossbench.grid import expand
    from lossbench.packing import train_pack

    text = TINY_SUITE.replace("  loss: [cross_entropy, mse]", "  loss: [cross_entropy]").replace(
        "  augmentation: [none, crop]", "  augmentation: [none]\n  optimizer: [{name: sgd, lr: 0.05}, "
                                        "{name: sgd, lr: 1.0e+8}]")
    cells = expand(load_suite(write_suite(text)), digits.identity)
    options = EngineOptions(torch.device("cpu"), "fp32")
    assert len(group_cells(cells, 2, options, digits)) == 1
    events: list[list[str]] = [[], []]
    progress = [lambda event, info, i=i: events[i].append(event) for i in range(2)]
    calm, wild = train_pack(cells, digits, options, progress)
    assert calm.status == "done" and [h.epoch for h in calm.history] == [1, 2], calm.traceback
    assert wild.status == "diverged" and wild.diverged_epoch == 1 and not wild.history
    assert events[0].count("epoch") == 2 and events[1].count("epoch") == 1
    assert all(any("pack of 2 cells" in note for note in r.notes) for r in (calm, wild))
