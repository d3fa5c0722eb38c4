"""The one-command GPU check: everything lossbench wants to know about a CUDA GPU, in at most 8 minutes, into one
summary file. Run it through `benchmarks/gpu_check.sh OUT` (which installs carried wheels first); `--dry-run` runs
every step on the CPU on tiny sizes (the slow tests do, so the check keeps working where no GPU is).

Steps, each a subprocess with its own time limit (the limits add up to under 8 minutes):

1. env        device name, torch/CUDA versions, nvidia-smi;
2. data       decode the dataset once into the cache the later steps read (timed on its own);
3. tests      the GPU-only tests (`pytest -m gpu`: CPU/GPU equality of augmentations, a cell and a pack on CUDA);
4. throughput benchmarks/throughput.py on CUDA: the naive torchvision pipeline, the engine at fp32 and bf16, the
              engine with torch.compile, and its per-model row (resnet18);
5. jobs N     a short grid (8 cells) with `--jobs 1`, `2` and `4` on the one GPU;
6. pack       the same short grid with `--pack 8` (all 8 cells as one batched model);
7. grid100    benchmarks/grid100.yaml shortened to fit (fewer epochs and seeds), with the fastest of step 5's jobs,
              and the projection of its aggregate rate to the full 100 cells × 15 epochs.

The summary (OUT/summary.md) gives each step's status and wall time, the throughput table, and for every grid run
its cells, training images, wall time and aggregate images/s (training images of all cells / wall seconds of the
whole command, start-up included).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
#: The test files that hold tests marked `gpu` (collecting only these keeps the step short).
GPU_TEST_FILES = ("tests/test_gpu.py", "tests/test_augment.py")
#: What the whole check may take on a GPU (seconds).
BUDGET_S = 8 * 60
#: The full grid of benchmarks/grid100.yaml: 100 cells × 15 epochs × 50,000 CIFAR-10 training images.
GRID100_IMAGES = 100 * 15 * 50_000


@dataclass
class Step:
    """One step of the check: its name, the command, its time limit (seconds) and, once run, what happened."""

    name: str
    command: list[str]
    limit_s: float
    status: str = "not run"
    wall_s: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sizes:
    """How big each step is: the real check on a GPU, or tiny on the CPU for --dry-run."""

    device: str
    dataset: dict[str, Any]
    short_epochs: int
    jobs: tuple[int, ...]
    grid_epochs: int
    grid_seeds: tuple[int, ...]
    throughput_args: tuple[str, ...]
    limits: dict[str, float]


GPU = Sizes(
    device="cuda",
    dataset={"name": "cifar10"},
    short_epochs=3,
    jobs=(1, 2, 4),
    grid_epochs=2,
    grid_seeds=(0,),
    throughput_args=("--train-images", "20000", "--test-images", "2000", "--batch-size", "512", "--warmup-epochs",
                     "1", "--timed-epochs", "2", "--workers", "8", "--compile"),
    # Seconds; 460 in all (jobs three times), so that the whole check ends inside 8 minutes even when every step
    # runs to its limit.
    limits={"env": 30, "data": 60, "tests": 30, "throughput": 120, "jobs": 40, "pack": 40, "grid100": 60},
)
DRY = Sizes(
    device="cpu",
    dataset={"name": "digits", "train_subset": 128, "test_subset": 64},
    short_epochs=1,
    jobs=(1, 2),
    grid_epochs=1,
    grid_seeds=(0,),
    throughput_args=("--dataset", "digits", "--train-images", "128", "--test-images", "64", "--batch-size", "32",
                     "--warmup-epochs", "0", "--timed-epochs", "1", "--workers", "0", "--models", "small_cnn",
                     "--model-images", "64"),
    limits={"env": 60, "data": 120, "tests": 300, "throughput": 300, "jobs": 300, "pack": 300, "grid100": 300},
)


def worst_case_s(sizes: Sizes) -> float:
    """The check's wall time if every step ran to its limit."""
    return sum(limit * (len(sizes.jobs) if name == "jobs" else 1) for name, limit in sizes.limits.items())


def short_suite(base: dict[str, Any], sizes: Sizes, data_root: str | None) -> dict[str, Any]:
    """8 cells (2 losses × 2 regularizers × 2 augmentations, one seed) of grid100's recipe, a few epochs."""
    suite = json.loads(json.dumps(base))
    suite["name"] = "gpu_short"
    suite["dataset"] = {**sizes.dataset, **({"root": data_root} if data_root else {})}
    suite["train"].update(epochs=sizes.short_epochs, device=sizes.device)
    suite["seeds"] = [0]
    suite["grid"]["loss"] = suite["grid"]["loss"][:2]
    if sizes.device == "cpu":
        suite["train"]["batch_size"] = 32
    return suite


def grid_suite(base: dict[str, Any], sizes: Sizes, data_root: str | None) -> dict[str, Any]:
    """grid100 itself, shortened: fewer epochs and seeds (the same 20 grid points per seed)."""
    suite = json.loads(json.dumps(base))
    suite["dataset"] = {**sizes.dataset, **({"root": data_root} if data_root else {})}
    suite["train"].update(epochs=sizes.grid_epochs, device=sizes.device)
    suite["seeds"] = list(sizes.grid_seeds)
    if sizes.device == "cpu":
        suite["train"]["batch_size"] = 32
    return suite


def run_step(step: Step, log_dir: Path, env: dict[str, str]) -> None:
    """Run one step under its time limit; its output goes to LOG_DIR/<name>.log."""
    log = log_dir / f"{step.name.replace(' ', '_')}.log"
    t0 = time.perf_counter()
    with log.open("w") as out:
        try:
            done = subprocess.run(step.command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=step.limit_s)
            step.status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
        except subprocess.TimeoutExpired:
            step.status = f"timed out after {step.limit_s:.0f} s"
    step.wall_s = time.perf_counter() - t0
    print(f"{step.name:<12} {step.status:<24} {step.wall_s:7.1f} s", flush=True)


def run_figures(out_dir: Path, wall_s: float) -> dict[str, Any]:
    """Cells, training images and aggregate images/s of one `lossbench run` output directory."""
    records = [json.loads(p.read_text()) for p in sorted((out_dir / "cells").glob("*.json"))]
    # img_per_s × train_time_s is the images a cell trained on (also in a pack, whose cells share its time).
    images = sum(r["timing"].get("img_per_s", 0) * r["timing"].get("train_time_s", 0) for r in records)
    done = sum(r["status"] == "done" for r in records)
    accs = [r["metrics"]["test_acc"] for r in records if r["status"] == "done"]
    return {
        "cells": len(records), "done": done, "train_images": int(images),
        "aggregate_img_per_s": images / wall_s if wall_s > 0 else 0.0,
        "mean_test_acc": sum(accs) / len(accs) if accs else None,
        "peak_mem_mb": max((r["timing"].get("peak_mem_mb", 0) for r in records), default=None),
    }


def throughput_figures(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return [{k: row[k] for k in ("pipeline_name", "precision", "batch_size", "img_per_s_median",
                                     "ratio_vs_naive")} for row in csv.DictReader(f)]


def environment(python: str, env: dict[str, str], limit_s: float) -> dict[str, Any]:
    probe = ("import json, platform, torch, torchvision; d = torch.cuda.is_available(); print(json.dumps({"
             "'python': platform.python_version(), 'torch': torch.__version__, 'torchvision': "
             "torchvision.__version__, 'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), "
             "'gpu': torch.cuda.get_device_name(0) if d else None, 'gpu_count': torch.cuda.device_count(), "
             "'bf16': torch.cuda.is_bf16_supported() if d else None, 'cpu_cores': len(__import__('os')"
             ".sched_getaffinity(0))}))")
    info: dict[str, Any] = {}
    try:
        info = json.loads(subprocess.run([python, "-c", probe], capture_output=True, text=True, env=env,
                                         timeout=limit_s).stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, IndexError, json.JSONDecodeError) as exc:
        info["error"] = f"{type(exc).__name__}: {exc}"
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        info["nvidia_smi"] = smi.stdout.strip()
    return info


def write_summary(path: Path, info: dict[str, Any], steps: list[Step], dry_run: bool, grid_jobs: int,
                  grid_epochs: int, grid_seeds: tuple[int, ...]) -> None:
    lines = [f"# lossbench GPU check{' (dry run on the CPU: tiny sizes, figures mean nothing)' if dry_run else ''}",
             "", f"date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
             f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "| step | status | wall s |", "|---|---|---:|"]
    lines += [f"| {s.name} | {s.status} | {s.wall_s:.1f} |" for s in steps]
    through = next((s for s in steps if s.name == "throughput"), None)
    if through and through.figures.get("rows"):
        lines += ["", "## Throughput (one cell, training images/s)", "",
                  "| pipeline | precision | batch | img/s (median) | vs naive |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r['pipeline_name']} | {r['precision']} | {r['batch_size']} | {r['img_per_s_median']} | "
                  f"{r['ratio_vs_naive']} |" for r in through.figures["rows"]]
    runs = [s for s in steps if "cells" in s.figures]
    if runs:
        lines += ["", "## Grid runs (aggregate = training images of all cells / wall seconds of the command)", "",
                  "| run | cells done | training images | wall s | aggregate img/s | mean test acc | peak MB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for s in runs:
            f = s.figures
            acc = "—" if f["mean_test_acc"] is None else f"{f['mean_test_acc']:.4f}"
            lines.append(f"| {s.name} | {f['done']}/{f['cells']} | {f['train_images']:,} | {s.wall_s:.1f} | "
                         f"{f['aggregate_img_per_s']:,.0f} | {acc} | {f['peak_mem_mb'] or 0:.0f} |")
    grid = next((s for s in steps if s.name == "grid100"), None)
    if grid and grid.figures.get("aggregate_img_per_s"):
        rate = grid.figures["aggregate_img_per_s"]
        lines += ["", f"grid100 shortened to {grid_epochs} epoch(s) × seeds {list(grid_seeds)} with --jobs "
                      f"{grid_jobs}: at {rate:,.0f} img/s the full grid (100 cells × 15 epochs, "
                      f"{GRID100_IMAGES:,} images) would take about {GRID100_IMAGES / rate:,.0f} s "
                      "(a projection, not a measurement; targets: ≥ 1M img/s, ≤ 120 s)"]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for summary.md, the logs and the runs' results")
    ap.add_argument("--dry-run", action="store_true", help="every step on the CPU, on tiny sizes")
    ap.add_argument("--data-root", default=str(REPO / ".data" / "cifar10-jpeg.tar.gz"),
                    help="CIFAR-10 (default .data/cifar10-jpeg.tar.gz, which benchmarks/gpu_prepare.sh copies)")
    ap.add_argument("--python", default=sys.executable, help="the Python that runs lossbench")
    args = ap.parse_args()
    sizes = DRY if args.dry_run else GPU
    data_root = None if args.dry_run else args.data_root
    out: Path = args.out.resolve()
    work = out / "runs"
    logs = out / "logs"
    for folder in (work, logs):
        folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(REPO)) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["LOSSBENCH_CACHE"] = str(work / "cache")
    if not args.dry_run and not Path(args.data_root).exists():
        print(f"error: no CIFAR-10 at {args.data_root}; run benchmarks/gpu_prepare.sh first", file=sys.stderr)
        return 2
    base = yaml.safe_load((REPO / "benchmarks" / "grid100.yaml").read_text())
    suites = {"short": short_suite(base, sizes, data_root), "grid100": grid_suite(base, sizes, data_root)}
    for name, suite in suites.items():
        (work / f"{name}.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    py = args.python
    run = [py, "-m", "lossbench", "run", "--no-report", "--plain", "--force"]
    steps = [
        Step("data", [py, "-c", "import json, sys; from pathlib import Path; from lossbench.config.dataset "
                      "import DatasetConfig; from lossbench.data import load_dataset; d = json.loads(sys.argv[1]); "
                      "x = load_dataset(DatasetConfig(name=d['name'], root=d.get('root')), cache_dir=Path(sys.argv[2]));"
                      " print(x.name, x.train_x.shape)",
                      json.dumps({**sizes.dataset, **({"root": data_root} if data_root else {})}),
                      str(work / "cache")], sizes.limits["data"]),
        Step("tests", [py, "-m", "pytest", "-q", "-rs", "-m", "gpu", "-p", "no:cacheprovider", *GPU_TEST_FILES],
             sizes.limits["tests"]),
        Step("throughput", [py, "benchmarks/throughput.py", "--device", sizes.device, "--cache-dir",
                            str(work / "cache"), "--csv", str(out / "throughput.csv"), *sizes.throughput_args,
                            *(["--data-root", data_root] if data_root else [])], sizes.limits["throughput"]),
    ]
    for jobs in sizes.jobs:
        steps.append(Step(f"jobs {jobs}", [*run, str(work / "short.yaml"), "--jobs", str(jobs), "--out",
                                           str(work / f"jobs{jobs}")], sizes.limits["jobs"]))
    steps.append(Step("pack", [*run, str(work / "short.yaml"), "--pack", "8", "--out", str(work / "pack8")],
                      sizes.limits["pack"]))
    print(f"lossbench GPU check{' (dry run)' if args.dry_run else ''} → {out}", flush=True)
    info = environment(py, env, sizes.limits["env"])
    print(json.dumps(info), flush=True)
    for step in steps:
        run_step(step, logs, env)
        if step.name == "throughput":
            step.figures["rows"] = throughput_figures(out / "throughput.csv")
        elif step.name.startswith("jobs") or step.name == "pack":
            target = work / ("pack8" if step.name == "pack" else f"jobs{step.name.split()[1]}")
            step.figures = run_figures(target, step.wall_s)
    timed = [s for s in steps if s.name.startswith("jobs") and s.figures.get("done")]
    grid_jobs = max(timed, key=lambda s: s.figures["aggregate_img_per_s"]).name.split()[1] if timed else "1"
    grid = Step("grid100", [*run, str(work / "grid100.yaml"), "--jobs", grid_jobs, "--out", str(work / "grid100")],
                sizes.limits["grid100"])
    run_step(grid, logs, env)
    grid.figures = run_figures(work / "grid100", grid.wall_s)
    steps.append(grid)
    summary = out / "summary.md"
    write_summary(summary, info, steps, args.dry_run, int(grid_jobs), sizes.grid_epochs, sizes.grid_seeds)
    print(f"summary: {summary}")
    failed = [s.name for s in steps if s.status != "ok"]
    if failed:
        print(f"steps not ok: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
