"""benchmarks/throughput.py keeps working: its timing core on a tiny synthetic dataset, the turn-taking between
pipelines, and the whole script on a few hundred digits (no assertions about speed)."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from lossbench.data import ImageData
from lossbench.data.load import channel_stats

_spec = importlib.util.spec_from_file_location("throughput", REPO / "benchmarks" / "throughput.py")
assert _spec is not None and _spec.loader is not None
throughput = importlib.util.module_from_spec(_spec)
sys.modules["throughput"] = throughput  # dataclasses look their module up by name
_spec.loader.exec_module(throughput)


def synthetic(n: int = 96, classes: int = 3, size: int = 12) -> ImageData:
    gen = torch.Generator().manual_seed(0)
    train_x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    test_x = torch.randint(0, 256, (n // 3, 3, size, size), dtype=torch.uint8, generator=gen)
    mean, std = channel_stats(train_x)
    return ImageData(
        name="synthetic", identity="synthetic:test", classes=tuple(str(c) for c in range(classes)),
        train_x=train_x, train_y=torch.arange(n) % classes, test_x=test_x, test_y=torch.arange(n // 3) % classes,
        mean=mean, std=std,
    )


def test_measure_times_naive_and_engine_pipelines_side_by_side() -> None:
    data = synthetic()
    recipe = throughput.Recipe(batch_size=32, eval_batch_size=64)
    pipelines = [
        ("naive", throughput.NaivePipeline(data, recipe, torch.device("cpu"), num_workers=0)),
        ("engine fp32", throughput.EnginePipeline(data, recipe, throughput.engine_options("cpu", "fp32"))),
        ("engine bf16", throughput.EnginePipeline(data, recipe, throughput.engine_options("cpu", "bf16"))),
    ]
    results = throughput.measure(pipelines, warmup_epochs=1, timed_epochs=2)
    assert [m.name for m in results] == ["naive", "engine fp32", "engine bf16"]
    assert [m.precision for m in results] == ["fp32", "fp32", "bf16"]
    for m in results:
        assert m.train_images == 96 and m.batch_size == 32 and m.device == "cpu"
        assert len(m.epoch_img_per_s) == 2 and all(math.isfinite(v) and v > 0 for v in m.epoch_img_per_s)
    assert results[0].num_workers == 0 and results[1].channels_last  # the layout `lossbench run` uses on CPU


def test_pipelines_take_turns_epoch_by_epoch_and_errors_surface() -> None:
    order: list[tuple[int, int]] = []

    def run(index: int, epochs_seen: int | None = None):
        def go(epochs: int, on_epoch) -> None:
            for epoch in range(1, (epochs_seen or epochs) + 1):
                order.append((index, epoch))
                on_epoch(epoch, 0.5 + index)

        return go

    seconds = throughput.measure_epochs([run(0), run(1), run(2)], warmup_epochs=1, timed_epochs=2)
    assert order == [(i, e) for e in (1, 2, 3) for i in (0, 1, 2)]
    assert seconds == [[0.5, 0.5], [1.5, 1.5], [2.5, 2.5]]  # the warm-up epoch is dropped

    def broken(epochs: int, on_epoch) -> None:
        on_epoch(1, 1.0)
        raise ValueError("pipeline broke")

    with pytest.raises(ValueError, match="pipeline broke"):
        throughput.measure_epochs([run(0), broken], warmup_epochs=0, timed_epochs=3)
    with pytest.raises(RuntimeError, match="reported 1 timed epochs"):
        throughput.measure_epochs([run(0, epochs_seen=2)], warmup_epochs=1, timed_epochs=2)


def test_script_prints_the_table_writes_the_csv_and_ends_with_the_speedup(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.csv"
    code = throughput.main(["--dataset", "digits", "--cache-dir", str(cache_dir), "--device", "cpu",
                            "--train-images", "160", "--test-images", "60", "--batch-size", "32",
                            "--warmup-epochs", "1", "--timed-epochs", "1", "--workers", "0", "--csv", str(out),
                            "--models", "small_cnn", "--model-images", "64"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("speedup_vs_naive=") and float(lines[-1].split("=")[1]) > 0
    assert torch.get_num_threads() == 1  # the script leaves torch's threads alone unless asked
    rows = list(csv.DictReader(out.open()))
    assert [r["pipeline_name"] for r in rows] == ["naive, 0 workers", "engine fp32", "engine bf16",
                                                  "engine fp32 small_cnn"]
    assert rows[0]["ratio_vs_naive"] == "1.0" and all(float(r["img_per_s_median"]) > 0 for r in rows)
    assert [r["train_images"] for r in rows] == ["160", "160", "160", "64"] and {r["device"] for r in rows} == {"cpu"}
    assert any(line.startswith("engine fp32 small_cnn") for line in lines)


def test_train_compile_reaches_the_model_without_changing_cell_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch import nn

    from lossbench.config.schema import Suite
    from lossbench.grid import expand
    from lossbench.execution import EngineSettings

    plain = {"name": "s", "dataset": {"name": "digits"}, "grid": {"loss": ["cross_entropy"]}}
    compiled = {**plain, "train": {"compile": True}}
    suites = [Suite.model_validate(s) for s in (plain, compiled)]
    assert [EngineSettings.from_suite(s).compile for s in suites] == [False, True]
    assert expand(suites[0], "digits:x")[0].id == expand(suites[1], "digits:x")[0].id

    # The default backend compiles C++ for minutes on a CPU; dynamo's eager backend traces the same model quickly.
    compiled_models: list[nn.Module] = []
    original = nn.Module.compile

    def eager_compile(self: nn.Module, *args: object, **kwargs: object) -> None:
        compiled_models.append(self)
        original(self, backend="eager")

    monkeypatch.setattr(nn.Module, "compile", eager_compile)
    recipe = throughput.Recipe(batch_size=32, eval_batch_size=64)
    pipeline = throughput.EnginePipeline(synthetic(), recipe,
                                         throughput.engine_options("cpu", "fp32", compile=True))
    [[seconds]] = throughput.measure_epochs([pipeline.run], warmup_epochs=1, timed_epochs=1)
    assert seconds > 0 and len(compiled_models) == 1


def test_native_bf16_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert throughput.native_bf16(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert not throughput.native_bf16(torch.device("cuda"))
    assert not throughput.native_bf16(torch.device("mps"))


def test_the_gpu_grid_suite_stays_valid() -> None:
    from lossbench.suite import load_suite
    from lossbench.grid import expand

    suite = load_suite(REPO / "benchmarks" / "grid100.yaml")
    assert len(expand(suite, "cifar10:x")) == 100 and suite.train.epochs == 15


def test_per_model_rows_time_the_engine_on_a_small_subset() -> None:
    data = synthetic()
    recipe = throughput.Recipe(batch_size=32, eval_batch_size=64)
    rows = throughput.measure_models(data, recipe, "cpu", ["small_cnn"], train_images=64)
    assert [m.name for m in rows] == ["engine fp32 small_cnn"]
    assert rows[0].train_images == 64 and len(rows[0].epoch_img_per_s) == 2
    assert all(math.isfinite(v) and v > 0 for v in rows[0].epoch_img_per_s)
