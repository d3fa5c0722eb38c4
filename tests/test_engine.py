"""The engine on real data (8×8 digits): determinism, pairing across cells, divergence and failure handling."""

from __future__ import annotations

import math

import pytest
import torch

from lossbench.suite import load_suite
from lossbench.data import ImageData
from lossbench.components import build_cell
from lossbench.device import resolve_device, resolve_precision
from lossbench.device import EngineOptions
from lossbench.execution import train_cell
from lossbench.grid import Cell, expand
from lossbench.losses import LOSSES

from conftest import TINY_SUITE, with_recipe


@pytest.fixture
def small(digits: ImageData) -> ImageData:
    """400 training and 200 test digits: enough to learn, fast to train."""
    from dataclasses import replace

    return replace(digits, train_x=digits.train_x[:400], train_y=digits.train_y[:400],
                   test_x=digits.test_x[:200], test_y=digits.test_y[:200])


def cells_of(write_suite, text: str = TINY_SUITE) -> list[Cell]:
    return expand(load_suite(write_suite(text)), "digits:sklearn")


CPU = EngineOptions(device=torch.device("cpu"), precision="fp32")


def trained(cell: Cell, data: ImageData, epochs: int = 2, options: EngineOptions = CPU):
    """The cell trained for `epochs` epochs of 64 images per step, evaluated 128 images at a time."""
    return train_cell(with_recipe(cell, epochs=epochs, batch_size=64, eval_batch_size=128), data, options)


def test_cell_trains_and_reports_everything(write_suite, small: ImageData) -> None:
    cell = cells_of(write_suite)[0]
    result = trained(cell, small, 3)
    assert result.status == "done", result.traceback
    m = result.metrics
    assert m["test_acc"] > 0.5  # ten classes: chance is 0.1
    assert 0 <= m["ece"] <= 1 and m["test_nll"] > 0 and m["test_top5"] >= m["test_acc"] and 0 < m["brier"] < 2
    assert abs(m["gap"] - (m["train_acc"] - m["test_acc"])) < 1e-12
    assert len(m["per_class_acc"]) == 10 and len(m["confusion"]) == 10
    assert sum(map(sum, m["confusion"])) == 200
    assert abs(sum(m["confusion"][c][c] for c in range(10)) / 200 - m["test_acc"]) < 1e-12
    assert [h.epoch for h in result.history] == [1, 2, 3]
    assert all(h.lr > 0 and h.epoch_s > 0 and h.test_top5 >= h.test_acc for h in result.history)
    assert result.history[-1].test_acc == m["test_acc"]
    assert result.timing["img_per_s"] > 0 and result.timing["peak_mem_mb"] > 0 and result.timing["epochs_run"] == 3


def test_same_seed_gives_identical_results(write_suite, small: ImageData) -> None:
    cell = cells_of(write_suite)[1]  # cross_entropy with random crops: exercises augmentation randomness too
    a, b = trained(cell, small), trained(cell, small)
    assert a.metrics["test_acc"] == b.metrics["test_acc"] and a.metrics["confusion"] == b.metrics["confusion"]
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]


def test_different_seeds_differ(write_suite, small: ImageData) -> None:
    cells = cells_of(write_suite, TINY_SUITE.replace("seeds: [0]", "seeds: [0, 1]"))
    a, b = trained(cells[0], small, 1), trained(cells[1], small, 1)
    assert a.history[0].train_loss != b.history[0].train_loss


def test_cells_with_one_seed_share_initial_weights(write_suite, small: ImageData) -> None:
    text = TINY_SUITE.replace("regularizer: [none]", "regularizer: [none, l2]")
    cells = cells_of(write_suite, text)
    states = [build_cell(c, small, CPU).model.state_dict() for c in cells]
    assert len({c.label for c in cells}) == 8
    for state in states[1:]:
        assert all(torch.equal(state[k], states[0][k]) for k in state)


def test_l2_penalty_is_recorded_and_matches_the_weights(write_suite, small: ImageData) -> None:
    text = TINY_SUITE.replace("regularizer: [none]", "regularizer: [{name: l2, weight: 0.001}]")
    cell = cells_of(write_suite, text)[0]
    result = trained(cell, small, 1)
    assert result.history[0].penalty is not None and result.history[0].penalty > 0
    parts = build_cell(with_recipe(cell, epochs=1), small, CPU)
    initial = 0.001 * sum(p.pow(2).sum().item() for p in parts.model.parameters() if p.ndim > 1)
    # The mean penalty over the first epoch is near its value at initialization (weights move little).
    assert math.isclose(result.history[0].penalty, initial, rel_tol=0.2)


def test_nonfinite_loss_marks_the_cell_diverged(write_suite, small: ImageData) -> None:
    text = TINY_SUITE.replace("lr: 0.05", "lr: 1.0e+8")
    cell = cells_of(write_suite, text)[0]
    result = trained(cell, small, 3)
    assert result.status == "diverged" and result.diverged_epoch == 1
    assert "training loss became" in result.error and result.metrics == {}


def test_an_exception_marks_the_cell_failed_with_its_traceback(write_suite, small: ImageData,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cell = cells_of(write_suite)[0]

    def boom(self, outputs, labels):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(LOSSES.get("cross_entropy"), "hard", boom)
    result = trained(cell, small, 1)
    assert result.status == "failed"
    assert "out of memory (simulated)" in result.error and "Traceback" in result.traceback


def test_non_probabilistic_loss_is_noted(write_suite, small: ImageData) -> None:
    text = TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [{name: mse, over: outputs}]")
    result = trained(cells_of(write_suite, text)[0], small, 1)
    assert result.status == "done" and any("softmax(outputs)" in n for n in result.notes)


def test_bf16_autocast_on_cpu_trains(write_suite, small: ImageData) -> None:
    opts = EngineOptions(device=torch.device("cpu"), precision="bf16")
    result = trained(cells_of(write_suite)[0], small, 1, opts)
    assert result.status == "done" and result.metrics["test_acc"] > 0.2


def test_device_and_precision_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    with pytest.raises(ValueError):
        resolve_precision("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_the_loop_imports_no_component_registry() -> None:
    """engine.py receives built parts: importing it loads no registry (and so no component module)."""
    import subprocess
    import sys

    probe = "import sys, lossbench.engine; print(sorted(m for m in sys.modules if m.startswith('lossbench')))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    for registry_module in ("lossbench.registry", "lossbench.components", "lossbench.losses'", "lossbench.models'",
                            "lossbench.augment", "lossbench.regularizers", "lossbench.optim", "lossbench.data'"):
        assert registry_module not in loaded, loaded
