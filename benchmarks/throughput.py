"""Training throughput of the lossbench engine against a naive torchvision pipeline, side by side in one run.

The headline configuration trains `tutorial_cnn` on CIFAR-10 with random crop (padding 4) and horizontal flip, SGD
(lr 0.01, momentum 0.9), cross-entropy and batch size 128 (a suite's defaults), with the same images, batch size,
seed and weight init in every pipeline:

- naive: the decoded uint8 images served one sample at a time the way torchvision.datasets.CIFAR10 serves them (an
  HWC uint8 array → PIL.Image.fromarray → transforms), RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor +
  Normalize, a shuffling DataLoader (persistent workers, pinned memory on a GPU), and a plain training loop with
  torch.optim.SGD in fp32. Measured with 0, 1 and 2 DataLoader workers; the fastest is the reference.
- engine: `lossbench.execution.train_cell` with the options `lossbench run` uses on that device (uint8 data on the
  device, batched augmentation, channels-last layout), at fp32 and at bf16 autocast; with `--compile` also with
  `train.compile: true`.

Every pipeline runs warm-up epochs first, then timed epochs; the pipelines take turns epoch by epoch, so a change in
the machine's load during the run hits all of them alike. Images per second of an epoch count training only (the
engine's per-epoch evaluation is excluded; the device is synchronized at both ends). The table gives the median
over the timed epochs and the ratio to the naive reference; a CSV gets one row per pipeline. The last line printed
is `speedup_vs_naive=<ratio>` for the headline: the engine at bf16 where the device computes bf16 natively (a CUDA
GPU with bf16, a CPU with AVX512-BF16 or AMX), otherwise at fp32, against the best naive pipeline.

After that comparison, one engine row per model named by `--models` (default `resnet18`): the same recipe at fp32
on `--model-images` training images (default 256) with 64 test images, 1 warm-up and 2 timed epochs, so a large
network gets a measured images/s figure without a long run (`--models ''` skips it).

    uv run python benchmarks/throughput.py --data-root /path/to/cifar10 --quick    # 40 s on an idle 2-core CPU
    uv run python benchmarks/throughput.py --data-root /path/to/cifar10 --device cuda --batch-size 512 --compile

docs/performance.md has the figures measured with it and what they mean.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lossbench.config.dataset import DatasetConfig
from lossbench.config.schema import Suite
from lossbench.data import ImageData, load_dataset
from lossbench.data.cache import DEFAULT_CACHE
from lossbench.device import EngineOptions, resolve_device
from lossbench.environment import cpu_name
from lossbench.execution import EngineSettings, train_cell
from lossbench.grid import expand
from lossbench.models import MODELS, ModelFacts

OnEpoch = Callable[[int, float], None]  # (epoch number from 1, seconds of training in that epoch)


@dataclass(frozen=True)
class Recipe:
    """What every pipeline of one run shares: model, batch size, optimizer, augmentation and seed."""

    model: str = "tutorial_cnn"
    batch_size: int = 128  # a suite's default train.batch_size
    lr: float = 0.01
    momentum: float = 0.9
    crop_padding: int = 4
    seed: int = 0
    eval_batch_size: int = 2048


@dataclass
class Measurement:
    """Per-epoch training speed of one pipeline, in images per second."""

    name: str
    pipeline: str  # naive | engine
    device: str
    precision: str
    batch_size: int
    train_images: int
    num_workers: int | None = None
    channels_last: bool = False
    compile: bool = False
    warmup_epochs: int = 0
    epoch_img_per_s: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.epoch_img_per_s) if self.epoch_img_per_s else math.nan


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build_model(recipe: Recipe, data: ImageData, device: torch.device) -> nn.Module:
    torch.manual_seed(recipe.seed)  # the engine seeds the same way before it builds the model: same initial weights
    facts = ModelFacts(in_channels=data.channels, image_size=data.image_size, out_features=data.num_classes)
    return MODELS.build(recipe.model, {}).build(facts).to(device)


# ---------------------------------------------------------------------------------------------------------------
# The naive pipeline.


class PILImages(torch.utils.data.Dataset):
    """uint8 images served as torchvision.datasets.CIFAR10 serves them: one PIL image per sample, then `transform`."""

    def __init__(self, data: ImageData, transform: Callable[[Any], torch.Tensor]):
        from PIL import Image

        self._fromarray = Image.fromarray
        images = data.train_x.permute(0, 2, 3, 1).numpy()  # [N, H, W, C] as torchvision keeps CIFAR-10
        self.images = images[..., 0] if images.shape[-1] == 1 else images  # PIL wants [H, W] for one channel
        self.labels = data.train_y.numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self._fromarray(self.images[index])), int(self.labels[index])


class NaivePipeline:
    """Per-sample PIL transforms in a DataLoader and a plain fp32 training loop (no host sync per step)."""

    pipeline = "naive"
    precision = "fp32"

    def __init__(self, data: ImageData, recipe: Recipe, device: torch.device, num_workers: int):
        import torchvision.transforms as T

        transform = T.Compose([
            T.RandomCrop(data.image_size[0], padding=recipe.crop_padding),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(data.mean, data.std),
        ])
        self.data, self.recipe, self.device, self.num_workers = data, recipe, device, num_workers
        self.loader = torch.utils.data.DataLoader(
            PILImages(data, transform), batch_size=recipe.batch_size, shuffle=True, num_workers=num_workers,
            persistent_workers=num_workers > 0, pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(recipe.seed),
        )

    def run(self, epochs: int, on_epoch: OnEpoch) -> None:
        device = self.device
        model = _build_model(self.recipe, self.data, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.recipe.lr, momentum=self.recipe.momentum)
        criterion = nn.CrossEntropyLoss()
        model.train()
        for epoch in range(1, epochs + 1):
            _sync(device)
            t0 = time.perf_counter()
            for x, y in self.loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = criterion(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            _sync(device)
            on_epoch(epoch, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------------------
# The lossbench engine.


def engine_options(device: str, precision: str, compile: bool = False) -> EngineOptions:
    """The engine options `lossbench run` would use for these settings."""
    return EngineSettings(device, precision, compile).options()


class EnginePipeline:
    """`lossbench.execution.train_cell` on one cell of the recipe, with the data already on the device."""

    pipeline = "engine"

    def __init__(self, data: ImageData, recipe: Recipe, options: EngineOptions):
        self.recipe, self.options = recipe, options
        self.precision = options.precision
        self.data = data.to(options.device)
        suite = Suite.model_validate({
            "name": "throughput",
            "dataset": {"name": data.name},
            "model": {"name": recipe.model},
            "train": {"batch_size": recipe.batch_size, "eval_batch_size": recipe.eval_batch_size,
                      "optimizer": {"name": "sgd", "lr": recipe.lr,
                                                                     "momentum": recipe.momentum}},
            "seeds": [recipe.seed],
            "grid": {"loss": ["cross_entropy"],
                     "augmentation": [[{"name": "crop", "padding": recipe.crop_padding}, "hflip"]]},
        })
        self.cell = expand(suite, data.identity)[0]

    def run(self, epochs: int, on_epoch: OnEpoch) -> None:
        def progress(event: str, info: dict[str, Any]) -> None:
            if event == "epoch" and info.get("train_s") is not None:
                on_epoch(info["epoch"], info["train_s"])

        cell = replace(self.cell, recipe=replace(self.cell.recipe, epochs=epochs))
        result = train_cell(cell, self.data, self.options, progress)
        if result.status != "done":
            raise RuntimeError(f"the engine did not finish: {result.status}: {result.error}\n{result.traceback or ''}")


# ---------------------------------------------------------------------------------------------------------------
# Timing.


class _Turns:
    """A baton passed round-robin between pipelines that run in threads, so only one of them computes at a time."""

    def __init__(self, count: int):
        self._cond = threading.Condition()
        self._turn = 0
        self._finished: set[int] = set()
        self._count = count

    def wait(self, index: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._turn == index)

    def pass_on(self, index: int, finished: bool = False) -> None:
        with self._cond:
            if finished:
                self._finished.add(index)
            for step in range(1, self._count + 1):
                nxt = (index + step) % self._count
                if nxt not in self._finished:
                    self._turn = nxt
                    break
            self._cond.notify_all()


def measure_epochs(
    runs: Sequence[Callable[[int, OnEpoch], None]], warmup_epochs: int, timed_epochs: int
) -> list[list[float]]:
    """Seconds of each timed epoch of each run; the runs take turns epoch by epoch.

    Each run is called once with the total number of epochs and must call its `on_epoch` callback at the end of
    every epoch; the first `warmup_epochs` epochs are not kept. An exception in a run is raised here.
    """
    total = warmup_epochs + timed_epochs
    seconds: list[list[float]] = [[] for _ in runs]
    errors: list[BaseException] = []
    turns = _Turns(len(runs))

    def worker(index: int) -> None:
        def on_epoch(epoch: int, secs: float) -> None:
            if epoch > warmup_epochs:
                seconds[index].append(secs)
            turns.pass_on(index)
            turns.wait(index)

        turns.wait(index)
        try:
            runs[index](total, on_epoch)
        except BaseException as exc:  # re-raised by the caller's thread below
            errors.append(exc)
        finally:
            turns.pass_on(index, finished=True)

    threads = [threading.Thread(target=worker, args=(i,), name=f"pipeline-{i}", daemon=True) for i in range(len(runs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    for index, secs in enumerate(seconds):
        if len(secs) != timed_epochs:
            raise RuntimeError(f"run {index} reported {len(secs)} timed epochs instead of {timed_epochs}")
    return seconds


def measure(
    pipelines: Sequence[tuple[str, NaivePipeline | EnginePipeline]], warmup_epochs: int, timed_epochs: int
) -> list[Measurement]:
    """Train every pipeline side by side and return its per-epoch images per second."""
    seconds = measure_epochs([p.run for _, p in pipelines], warmup_epochs, timed_epochs)
    out = []
    for (name, p), secs in zip(pipelines, seconds):
        n = int(p.data.train_y.shape[0])
        device = p.device if isinstance(p, NaivePipeline) else p.options.device
        out.append(Measurement(
            name=name, pipeline=p.pipeline, device=str(device), precision=p.precision,
            batch_size=p.recipe.batch_size, train_images=n,
            num_workers=p.num_workers if isinstance(p, NaivePipeline) else None,
            channels_last=isinstance(p, EnginePipeline) and p.options.channels_last,
            compile=isinstance(p, EnginePipeline) and p.options.compile,
            warmup_epochs=warmup_epochs, epoch_img_per_s=[n / s for s in secs],
        ))
    return out


def measure_models(data: ImageData, recipe: Recipe, device: str, models: Sequence[str], train_images: int,
                   warmup_epochs: int = 1, timed_epochs: int = 2) -> list[Measurement]:
    """Engine fp32 images/s of each model on the first `train_images` training images (and 64 test images, so the
    per-epoch evaluation stays short), one model after another; rows are named `engine fp32 <model>`."""
    small = replace(data, train_x=data.train_x[:train_images], train_y=data.train_y[:train_images],
                    test_x=data.test_x[:64], test_y=data.test_y[:64])
    rows = []
    for model in models:
        model_recipe = replace(recipe, model=model)
        options = engine_options(device, "fp32")
        rows += measure([(f"engine fp32 {model}", EnginePipeline(small, model_recipe, options))], warmup_epochs,
                        timed_epochs)
    return rows


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 in hardware (bf16 autocast then trains faster than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        return any(bool(getattr(cpu, probe, lambda: False)()) for probe in
                   ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


# ---------------------------------------------------------------------------------------------------------------
# The command line.


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", help="CIFAR-10: torchvision files, an image folder or a .tar.gz/.zip archive "
                                        "(default: the dataset's download into the cache)")
    ap.add_argument("--dataset", default="cifar10", help="a lossbench dataset name (default cifar10)")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="decoded-dataset cache")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    ap.add_argument("--quick", action="store_true",
                    help="4,096 training images, 1 warm-up + 3 timed epochs: under 3 minutes on a 2-core CPU")
    ap.add_argument("--train-images", type=int, help="training images (default: all, or 4096 with --quick)")
    ap.add_argument("--test-images", type=int, help="test images the engine evaluates each epoch (default: all, "
                                                    "or 1000 with --quick)")
    ap.add_argument("--batch-size", type=int, default=Recipe.batch_size)
    ap.add_argument("--warmup-epochs", type=int, default=1)
    ap.add_argument("--timed-epochs", type=int, help="default 5, or 3 with --quick")
    ap.add_argument("--workers", default="0,1,2", help="DataLoader workers to try for the naive pipeline")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    ap.add_argument("--compile", action="store_true", help="also measure the engine with train.compile: true")
    ap.add_argument("--models", default="resnet18",
                    help="comma-separated models that get a per-model engine row (default resnet18; '' for none)")
    ap.add_argument("--model-images", type=int, default=256, help="training images of the per-model rows")
    ap.add_argument("--csv", type=Path, help="where to write the CSV (default results/benchmarks/throughput-<device>.csv)")
    return ap.parse_args(argv)


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if math.isfinite(value) else "—"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    train_images = args.train_images or (4096 if args.quick else None)
    test_images = args.test_images or (1000 if args.quick else None)
    timed = args.timed_epochs or (3 if args.quick else 5)
    recipe = Recipe(batch_size=args.batch_size)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]

    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    data = load_dataset(DatasetConfig(name=args.dataset, root=args.data_root, train_subset=train_images,
                                      test_subset=test_images), cache_dir=args.cache_dir)
    headline_precision = "bf16" if native_bf16(device) else "fp32"
    pipelines: list[tuple[str, NaivePipeline | EnginePipeline]] = [
        (f"naive, {w} worker{'s' if w != 1 else ''}", NaivePipeline(data, recipe, device, w)) for w in workers
    ]
    for precision in ("fp32", "bf16"):
        pipelines.append((f"engine {precision}", EnginePipeline(
            data, recipe, engine_options(str(device), precision))))
    if args.compile:
        pipelines.append((f"engine {headline_precision} + compile", EnginePipeline(
            data, recipe, engine_options(str(device), headline_precision, compile=True))))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device {device} ({name}) · torch {torch.__version__} · {torch.get_num_threads()} torch thread(s) · "
          f"{data.name} {data.train_x.shape[0]:,} training images {tuple(data.image_size)} · {recipe.model} · "
          f"batch {recipe.batch_size} · sgd lr {recipe.lr} momentum {recipe.momentum} · crop(padding="
          f"{recipe.crop_padding}) + hflip · {args.warmup_epochs} warm-up + {timed} timed epochs per pipeline",
          flush=True)
    results = measure(pipelines, args.warmup_epochs, timed)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    model_rows = measure_models(data, recipe, str(device), models, args.model_images) if models else []
    load_after = os.getloadavg()[0]

    naive = [m for m in results if m.pipeline == "naive"]
    reference = max(naive, key=lambda m: m.median) if naive else None
    ratio = {m.name: m.median / reference.median if reference else math.nan for m in results}
    print(f"{'pipeline':<24} {'device':<7} {'batch':>5} {'precision':<9} {'img/s (median)':>15} "
          f"{'min–max':>17} {'vs naive':>9}")
    for m in results:
        spread = f"{_fmt_rate(min(m.epoch_img_per_s))}–{_fmt_rate(max(m.epoch_img_per_s))}"
        print(f"{m.name:<24} {m.device:<7} {m.batch_size:>5} {m.precision:<9} {_fmt_rate(m.median):>15} "
              f"{spread:>17} {ratio[m.name]:>8.2f}×")
    if model_rows:
        print(f"per-model engine rows (fp32, {args.model_images} training images, 1 warm-up + 2 timed epochs; "
              "not comparable with the rows above):")
        for m in model_rows:
            spread = f"{_fmt_rate(min(m.epoch_img_per_s))}–{_fmt_rate(max(m.epoch_img_per_s))}"
            print(f"{m.name:<24} {m.device:<7} {m.batch_size:>5} {m.precision:<9} {_fmt_rate(m.median):>15} "
                  f"{spread:>17}")
            ratio[m.name] = math.nan
    cores = os.cpu_count() or 1
    print(f"load average (1 min) {load_before:.1f} at the start, {load_after:.1f} at the end, on {cores} core(s); "
          f"wall time {time.perf_counter() - t_start:.0f} s")
    if max(load_before, load_after) > cores:
        print("warning: other processes competed for the CPU during this run; the figures are lower (and the "
              "ratios noisier) than on an idle machine")

    out = args.csv or Path("results") / "benchmarks" / f"throughput-{device.type}.csv"
    write_csv(out, results + model_rows, ratio, {
        "device_name": name, "torch": torch.__version__, "threads": torch.get_num_threads(), "dataset": data.name,
        "load_avg_start": round(load_before, 2), "load_avg_end": round(load_after, 2),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    print(f"csv: {out}")
    headline = f"engine {headline_precision}"
    print(f"headline: {headline} vs {reference.name if reference else '—'}")
    print(f"speedup_vs_naive={ratio.get(headline, math.nan):.2f}")
    return 0


def write_csv(path: Path, results: list[Measurement], ratio: dict[str, float], extra: dict[str, Any]) -> None:
    """One row per pipeline: its settings, the median/min/max images per second, the ratio and every epoch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["pipeline_name", "pipeline", "device", "precision", "batch_size", "train_images", "num_workers",
               "channels_last", "compile", "warmup_epochs", "timed_epochs", "img_per_s_median", "img_per_s_min",
               "img_per_s_max", "ratio_vs_naive", "epoch_img_per_s", *extra]
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for m in results:
            writer.writerow({
                "pipeline_name": m.name, "pipeline": m.pipeline, "device": m.device, "precision": m.precision,
                "batch_size": m.batch_size, "train_images": m.train_images, "num_workers": m.num_workers,
                "channels_last": m.channels_last, "compile": m.compile, "warmup_epochs": m.warmup_epochs,
                "timed_epochs": len(m.epoch_img_per_s), "img_per_s_median": round(m.median, 1),
                "img_per_s_min": round(min(m.epoch_img_per_s), 1), "img_per_s_max": round(max(m.epoch_img_per_s), 1),
                "ratio_vs_naive": round(ratio[m.name], 3),
                "epoch_img_per_s": " ".join(f"{v:.1f}" for v in m.epoch_img_per_s), **extra,
            })
    os.replace(f.name, path)


if __name__ == "__main__":
    sys.exit(main())
