"""Corrupting, then evaluating N CIFAR-sized images per severity, against one plain evaluation pass of them.

The target (issue "Keep what was trained", docs/performance.md): scoring one corruption at one severity — corrupt
10,000 images of 3×32×32 on the device, then run the model over them — takes at most 2× a test-set evaluation pass
of the same images on the same device. The evaluation pass is what `lossbench run` does for the clean test split:
uint8 → float, standardize, model forward in eval mode in batches of `--eval-batch-size`, no grad.

Both are timed as `lossbench.shift.evaluate.ShiftPlan.score` does them (corruption in chunks of 1,000 images with a
seeded generator, logits collected), with the device synchronized at both ends; each is repeated `--repeats`
times, interleaved so a change of the machine's load hits both, and the median is reported. Images are random
uint8 (corruption and model cost do not depend on the content; JPEG here has no entropy coding). The last line is
`worst_ratio=<ratio>`, the slowest corruption's median time over the evaluation pass's.

    OMP_NUM_THREADS=1 uv run python benchmarks/shift.py                       # CPU, tutorial_cnn, 10,000 images
    uv run python benchmarks/shift.py --device cuda --model resnet18          # on a GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lossbench.data.base import ImageData
from lossbench.device import EngineOptions, Normalizer, resolve_device, synchronize
from lossbench.losses import LOSSES
from lossbench.models import MODELS, DropoutPlacement, ModelFacts
from lossbench.environment import cpu_name
from lossbench.shift.corruptions import CORRUPTIONS
from lossbench.shift.evaluate import CHUNK, _Forward, _generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="tutorial_cnn")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval-batch-size", type=int, default=2048)
    parser.add_argument("--corruptions", default=",".join(CORRUPTIONS))
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (args.images,))
    data = ImageData("random", "random", tuple(map(str, range(10))), x[:1], y[:1], x, y,
                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).to(device)
    model = MODELS.build(args.model, {}).build(ModelFacts(3, (32, 32), 10, DropoutPlacement())).to(device)
    channels_last = device.type in ("cuda", "cpu")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    options = EngineOptions(device=device, precision="bf16" if device.type == "cuda" else "fp32",
                            channels_last=channels_last)
    norm = Normalizer(data, device, channels_last)
    forward = _Forward(model, LOSSES.build("cross_entropy", {}), norm, options, args.eval_batch_size)

    def evaluation() -> None:
        forward(norm.to_unit(data.test_x))

    def corrupted(name: str) -> None:
        corruption = CORRUPTIONS[name]
        for chunk, start in enumerate(range(0, args.images, CHUNK)):
            g = _generator(device, f"{name}|{args.severity}|{chunk}") if corruption.random else None
            forward(corruption(norm.to_unit(data.test_x[start:start + CHUNK]), args.severity, g))

    def timed(fn: object) -> float:
        synchronize(device)
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        synchronize(device)
        return time.perf_counter() - t0

    names = [n for n in args.corruptions.split(",") if n]
    evaluation(), [corrupted(n) for n in names]  # warm-up: kernels, caches, allocator
    load_start = os.getloadavg()
    times: dict[str, list[float]] = {"evaluation": [], **{n: [] for n in names}}
    for _ in range(args.repeats):
        times["evaluation"].append(timed(evaluation))
        for name in names:
            times[name].append(timed(lambda n=name: corrupted(n)))
    load_end = os.getloadavg()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device {device} ({device_name}), {torch.get_num_threads()} torch thread(s), model {args.model}, "
          f"{args.images:,} images 3×32×32, severity {args.severity}, median of {args.repeats}")
    print(f"load average 1/5/15 min: start {load_start[0]:.1f}/{load_start[1]:.1f}/{load_start[2]:.1f}, "
          f"end {load_end[0]:.1f}/{load_end[1]:.1f}/{load_end[2]:.1f} on {os.cpu_count()} core(s)")
    base = statistics.median(times["evaluation"])
    print(f"{'pass':<18} {'median s':>9} {'min–max s':>15} {'× evaluation':>13}")
    worst = 0.0
    for name, values in times.items():
        median = statistics.median(values)
        ratio = median / base
        worst = max(worst, ratio) if name != "evaluation" else worst
        print(f"{name:<18} {median:9.3f} {min(values):7.3f}–{max(values):<7.3f} {ratio:13.2f}")
    print(f"worst_ratio={worst:.2f}")


if __name__ == "__main__":
    main()
