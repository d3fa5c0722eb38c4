"""On a CUDA GPU (skipped without one; benchmarks/gpu_check.sh runs them with `-m gpu`): a cell trains there as on
the CPU, bf16 autocast keeps the accuracy, and packing on the GPU matches its sequential run."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from conftest import TINY_SUITE
from lossbench import runner
from lossbench.suite import load_suite
from lossbench.models import MODELS, ModelFacts
from lossbench.packing import batched_forward, stack_parameters

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

_SUITE = TINY_SUITE.replace("  device: cpu\n", "  device: cuda\n").replace("epochs: 2", "epochs: 4")


def _accuracies(write_suite, out: Path, cache_dir: Path, overrides: tuple[str, ...] = (),
                **options: object) -> dict[str, float]:
    suite = load_suite(write_suite(_SUITE), overrides, settings=options)
    summary = runner.run(runner.plan(suite, out, cache_dir=cache_dir))
    assert all(r.status == "done" for r in summary.records), [r.error for r in summary.records]
    return {r.label: r.metrics.test_acc for r in summary.records}


def test_a_cell_trains_on_cuda_as_on_the_cpu(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    fp32 = ("train.precision=fp32",)
    gpu = _accuracies(write_suite, tmp_path / "gpu", cache_dir, fp32)
    cpu = _accuracies(write_suite, tmp_path / "cpu", cache_dir, fp32, device="cpu")
    bf16 = _accuracies(write_suite, tmp_path / "bf16", cache_dir)  # precision auto: bf16 autocast on CUDA
    assert gpu.keys() == cpu.keys() == bf16.keys()
    for label, acc in gpu.items():
        assert acc == pytest.approx(cpu[label], abs=0.05), label
        assert bf16[label] == pytest.approx(acc, abs=0.1), label


def test_packed_cells_on_cuda_match_their_sequential_run(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    sequential = _accuracies(write_suite, tmp_path / "seq", cache_dir)
    packed = _accuracies(write_suite, tmp_path / "pack", cache_dir, pack=4)
    assert packed.keys() == sequential.keys()
    for label, acc in packed.items():
        assert acc == pytest.approx(sequential[label], abs=0.03), label


def test_the_batched_forward_on_cuda_equals_each_model() -> None:
    models = []
    for seed in range(4):
        torch.manual_seed(seed)
        models.append(MODELS.build("tutorial_cnn", {}).build(ModelFacts(in_channels=3, image_size=(32, 32),
                                                                         out_features=10)).cuda())
    alone = copy.deepcopy(models)
    x = torch.randn(4, 16, 3, 32, 32, device="cuda")
    out = batched_forward(models[0])(stack_parameters(models), x)
    for i, model in enumerate(alone):
        # cuDNN may run the convolutions in TF32: a loose tolerance, still far below the gap between two models.
        torch.testing.assert_close(out[i], model(x[i]), rtol=1e-2, atol=1e-3)
