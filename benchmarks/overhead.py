"""What lossbench costs around the training, at grid sizes from 200 to 100,000 cells.

Four parts, each selectable with --parts:

- a (bookkeeping): a run of N synthetic cells whose records are made without training, through `runner.run`,
  the real store and a plain display writing to /dev/null. Per cell it times everything the run does with a
  result (the cell file, its results.csv row, the display, the run's summary) and reports the median over the
  first and the last 1,000 cells, the mean over all cells including the final sorted rewrite of results.csv, and
  the time to plan a resume of the complete directory (every cell file read once).
- b (tiny real cells): a real grid of digits cells (1 epoch, 20 training images, small_cnn, one torch thread)
  trained by `runner.run` in this process; reports wall time from planning to the last result, minus the
  training and evaluation seconds the cells recorded, per cell.
- c (start-up): `lossbench validate suites/smoke.yaml` and `lossbench run suites/smoke.yaml` up to the start of
  its first cell (data loaded, model about to train), each in a fresh process, with the installed bytecode and
  with none (an empty PYTHONPYCACHEPREFIX and PYTHONDONTWRITEBYTECODE=1: every module compiled from source, as
  in an environment installed without compiling whose bytecode is never written). With --data-root, also the
  second `validate suites/cifar.yaml --data-root …` (the first fills the remembered checks).
- d (report): `lossbench report` in a fresh process on a directory of N synthetic cells (made as in part a);
  lists the plots it wrote with their pixel sizes.
- s (shape check, not in the default parts): `components.check_model_shape` of every built-in model on 3×32×32
  images, as a CPU forward pass of one zero image and on the meta device, each first in a fresh process (what
  `validate` pays) and then again in that process.

    OMP_NUM_THREADS=1 uv run python benchmarks/overhead.py                        # everything, full sizes
    OMP_NUM_THREADS=1 uv run python benchmarks/overhead.py --parts a --bookkeeping 1000 10000
    OMP_NUM_THREADS=1 uv run python benchmarks/overhead.py --parts c --data-root /path/cifar10-jpeg.tar.gz

Every figure is printed with the machine's load average at the time; --csv writes one row per figure.
docs/performance.md has the figures measured with it.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lossbench.execution import Executor

REPO = Path(__file__).resolve().parent.parent
ROWS: list[dict[str, Any]] = []

#: The grid of the synthetic and tiny suites: 4 losses × 5 regularizers × 5 augmentations = 100 points; the
#: seeds make up the rest of the cell count.
GRID = """\
grid:
  loss: [cross_entropy, {name: mse, over: probabilities}, {name: mse, over: outputs}, {name: focal, gamma: 2}]
  regularizer: [none, {name: l2, weight: 1.0e-4}, {name: l2, weight: 1.0e-3}, {name: l1, weight: 1.0e-5},
                {name: l1, weight: 1.0e-4}]
  augmentation: [none, {name: crop, padding: 1}, {name: crop, padding: 2}, hflip, {name: translate}]
"""
SUITE = """\
name: NAME
dataset: {name: digits, train_subset: 20}
model: {name: small_cnn}
train: {epochs: 1, batch_size: 20, device: cpu, threads: 1}
seeds: [SEEDS]
""" + GRID


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(part: str, size: int | str, what: str, value: float, unit: str) -> None:
    """Print one figure and keep it for the CSV."""
    load = load_average()
    ROWS.append({"part": part, "size": size, "figure": what, "value": round(value, 6), "unit": unit,
                 "load_average": load})
    print(f"  {part} {str(size):>7}  {what:<52} {value:12.4f} {unit:<6} (load {load})", flush=True)


def write_suite(directory: Path, name: str, cells: int) -> Path:
    """A suite of `cells` cells (100 grid points × cells/100 seeds) in `directory`."""
    if cells % 100:
        raise SystemExit(f"cell counts must be multiples of 100 (the grid has 100 points), not {cells}")
    path = directory / f"{name}.yaml"
    seeds = ", ".join(map(str, range(cells // 100)))
    path.write_text(SUITE.replace("NAME", name).replace("SEEDS", seeds), encoding="utf-8")
    return path


def synthetic_record(cell: Any, job: Any, rng: random.Random) -> Any:
    """A finished record of `cell`, shaped like a real one (metrics, one epoch of history, timings)."""
    from lossbench.execution import failed_record
    from lossbench.record import Environment, Epoch, Metrics, Timings

    record = failed_record(cell, job, "", "")
    acc = 0.5 + 0.4 * rng.random()
    record.status, record.error, record.traceback = "done", None, None
    record.metrics = Metrics(test_acc=acc, test_top5=min(1.0, acc + 0.2), test_loss=1.0 - acc, test_nll=1 - acc,
                             ece=0.1 * rng.random(), train_acc=min(1.0, acc + 0.05), gap=0.05, brier=0.2)
    record.history = [Epoch(epoch=1, train_loss=1.0 - acc, train_acc=acc, test_acc=acc, test_loss=1 - acc, lr=0.01,
                            epoch_s=0.01)]
    record.timing = Timings(train_time_s=0.01, eval_time_s=0.005, img_per_s=2000.0, epochs_run=1, peak_mem_mb=1.0,
                            cell_s=0.02, overhead_s=0.005)
    record.env = Environment(device="cpu", threads=1)
    return record


class FsyncClock:
    """Counts the seconds this process spends in os.fsync: a cell file is fsynced before its rename, and what
    that costs depends on the disk and on what else writes to it, not on lossbench."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._real = os.fsync

    def __enter__(self) -> FsyncClock:
        def timed(fd: int) -> None:
            t0 = time.perf_counter()
            try:
                self._real(fd)
            finally:
                self.seconds += time.perf_counter() - t0

        os.fsync = timed  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        os.fsync = self._real  # type: ignore[assignment]


class SyntheticExecutor(Executor):
    """Hands the runner a ready-made record per cell and times what the runner does with it (`on_result`)."""

    def __init__(self, seed: int = 0, fsync: FsyncClock | None = None):
        self.rng = random.Random(seed)
        self.seconds: list[float] = []  # per cell: everything the runner does with its record
        self.without_fsync: list[float] = []  # the same minus the time spent waiting for the disk in fsync
        self.making = 0.0  # seconds spent making the records (not bookkeeping)
        self.fsync = fsync

    def run(self, cells: list[Any], job: Any, on_start: Any, on_event: Any, on_result: Any) -> None:
        for cell in cells:
            t_make = time.perf_counter()
            record = synthetic_record(cell, job, self.rng)
            self.making += time.perf_counter() - t_make
            synced = self.fsync.seconds if self.fsync else 0.0
            t0 = time.perf_counter()
            on_start(cell)
            on_result(cell, record)
            seconds = time.perf_counter() - t0
            self.seconds.append(seconds)
            self.without_fsync.append(seconds - ((self.fsync.seconds if self.fsync else 0.0) - synced))


def synthetic_directory(work: Path, cells: int) -> tuple[Path, Path, SyntheticExecutor, float]:
    """(suite file, results directory, the executor with its per-cell times, run wall seconds) of a run of
    `cells` synthetic cells."""
    from lossbench import runner
    from lossbench.suite import load_suite
    from lossbench.progress import PlainDisplay

    suite_path = write_suite(work, f"synthetic{cells}", cells)
    out = work / f"synthetic{cells}"
    plan = runner.plan(load_suite(suite_path), out, check_device=False)
    with open(os.devnull, "w") as sink, FsyncClock() as fsync:
        executor = SyntheticExecutor(fsync=fsync)
        t0 = time.perf_counter()
        runner.run(plan, executor=executor, display=PlainDisplay(sink))
        wall = time.perf_counter() - t0
    return suite_path, out, executor, wall


def part_a(sizes: list[int], work: Path) -> None:
    from lossbench import runner
    from lossbench.suite import load_suite

    print("a. bookkeeping per cell (synthetic records: cell file + results.csv row + display + summary)")
    for n in sizes:
        suite_path, out, executor, wall = synthetic_directory(work, n)
        times = executor.seconds
        window = min(1000, len(times))
        report("a", n, f"median ms per cell, first {window} cells", 1e3 * statistics.median(times[:window]), "ms")
        report("a", n, f"median ms per cell, last {window} cells", 1e3 * statistics.median(times[-window:]), "ms")
        report("a", n, f"mean ms per cell, last {window} cells", 1e3 * statistics.fmean(times[-window:]), "ms")
        bare = executor.without_fsync
        report("a", n, f"median ms per cell w/o fsync, first {window}", 1e3 * statistics.median(bare[:window]), "ms")
        report("a", n, f"median ms per cell w/o fsync, last {window}", 1e3 * statistics.median(bare[-window:]), "ms")
        report("a", n, f"mean ms per cell w/o fsync, last {window}", 1e3 * statistics.fmean(bare[-window:]), "ms")
        report("a", n, "mean ms per cell, whole run incl. final rewrite", 1e3 * (wall - executor.making) / n, "ms")
        report("a", n, "of which fsync (the disk), ms per cell", 1e3 * executor.fsync.seconds / n, "ms")
        suite = load_suite(suite_path)
        t0 = time.perf_counter()
        plan = runner.plan(suite, out, check_device=False)
        resume = time.perf_counter() - t0
        assert not plan.pending
        report("a", n, "resume: plan of the complete directory, ms per cell", 1e3 * resume / n, "ms")
        shutil.rmtree(out)


def part_b(sizes: list[int], work: Path) -> None:
    import torch

    from lossbench import runner
    from lossbench.suite import load_suite
    from lossbench.data.cache import DEFAULT_CACHE
    from lossbench.progress import PlainDisplay

    torch.set_num_threads(1)
    print("b. tiny real cells (digits, 1 epoch, 20 training images): wall minus recorded train + eval, per cell")
    for n in sizes:
        suite_path = write_suite(work, f"tiny{n}", n)
        out = work / f"tiny{n}"
        t0 = time.perf_counter()
        plan = runner.plan(load_suite(suite_path), out, cache_dir=DEFAULT_CACHE)
        with open(os.devnull, "w") as sink:
            summary = runner.run(plan, display=PlainDisplay(sink))
        wall = time.perf_counter() - t0
        assert summary.ran == n and summary.failed == 0, (summary.ran, summary.failed)
        trained = sum(float(r.timing.train_time_s or 0) + float(r.timing.eval_time_s or 0)
                      for r in summary.records)
        report("b", n, "wall s per cell (plan to last result)", wall / n, "s")
        report("b", n, "recorded train + eval s per cell", trained / n, "s")
        report("b", n, "overhead s per cell (wall - train - eval)", (wall - trained) / n, "s")
        shutil.rmtree(out)


def _lossbench(args: list[str], env: dict[str, str], until: str | None = None, timeout: float = 600) -> float:
    """Seconds a fresh `python -m lossbench ARGS` takes to exit (0 required), or to print a line that starts
    with `until` (then it is killed)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if until is not None and line.startswith(until):
            seconds = time.perf_counter() - t0
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
            return seconds
    code = proc.wait(timeout=timeout)
    if code != 0 or until is not None:
        raise SystemExit(f"lossbench {' '.join(args)} ended with code {code}:\n{''.join(lines[-20:])}")
    return time.perf_counter() - t0


def part_c(repeat: int, work: Path, data_root: str | None) -> None:
    print(f"c. start-up in a fresh process (median of {repeat})")
    base = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    no_cache = Path(tempfile.mkdtemp(prefix="no-pycache-", dir=work))
    variants = {
        "installed bytecode": {**base},
        "no bytecode": {**base, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(no_cache)},
    }
    for name, env in variants.items():
        validate = [_lossbench(["validate", "suites/smoke.yaml"], env) for _ in range(repeat)]
        report("c", "smoke", f"validate suites/smoke.yaml, {name}", statistics.median(validate), "s")
        first_cell = []
        for i in range(repeat):
            out = work / f"startup-{i}"
            first_cell.append(_lossbench(["run", "suites/smoke.yaml", "--out", str(out), "--plain", "--no-report"],
                                         env, until="[1/"))
            shutil.rmtree(out, ignore_errors=True)
        report("c", "smoke", f"run suites/smoke.yaml to its first cell, {name}", statistics.median(first_cell), "s")
    if data_root:
        args = ["validate", "suites/cifar.yaml", "--data-root", data_root]
        first = _lossbench(args, base)
        report("c", "cifar10", "validate suites/cifar.yaml, first (fills the checks)", first, "s")
        again = [_lossbench(args, base) for _ in range(repeat)]
        report("c", "cifar10", "validate suites/cifar.yaml, again", statistics.median(again), "s")


def part_d(cells: int, work: Path) -> None:
    from PIL import Image

    print(f"d. lossbench report on {cells} synthetic cells")
    _, out, _, _ = synthetic_directory(work, cells)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    seconds = _lossbench(["report", str(out)], env, timeout=3600)
    report("d", cells, "lossbench report, fresh process", seconds, "s")
    for png in sorted(out.rglob("*.png")):
        with Image.open(png) as image:
            print(f"      {png.relative_to(out)}: {image.size[0]}×{image.size[1]} px")
    report_md = out / "report.md"
    if report_md.exists():
        print(f"      report.md: {report_md.stat().st_size / 1e3:.0f} kB, {len(report_md.read_text().splitlines())} lines")


SHAPE_CHECK = """
import sys, time
from lossbench.components import check_model_shape
from lossbench.models import ModelFacts
facts = ModelFacts(3, (32, 32), 10)
t0 = time.perf_counter()
check_model_shape(sys.argv[1], {}, facts, device=sys.argv[2])
t1 = time.perf_counter()
check_model_shape(sys.argv[1], {}, facts, device=sys.argv[2])
print(t1 - t0, time.perf_counter() - t1, "torch._dynamo" in sys.modules)
"""


def part_s() -> None:
    from lossbench.models import MODELS

    print("s. model-shape check on 3x32x32 images: first call in a fresh process, then again")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for name in MODELS.names():
        for device in ("cpu", "meta"):
            out = subprocess.run([sys.executable, "-c", SHAPE_CHECK, name, device], cwd=REPO, env=env,
                                 capture_output=True, text=True, check=True).stdout.split()
            report("s", name, f"{device}: first call (s); dynamo imported: {out[2]}", float(out[0]), "s")
            report("s", name, f"{device}: again (s)", float(out[1]), "s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="abcd", help="which parts to run, e.g. 'ab' (default abcd)")
    parser.add_argument("--bookkeeping", type=int, nargs="+", default=[1000, 10000, 100000], metavar="N",
                        help="cell counts of part a (multiples of 100)")
    parser.add_argument("--tiny", type=int, nargs="+", default=[200, 1000, 10000], metavar="N",
                        help="cell counts of part b (multiples of 100)")
    parser.add_argument("--report-cells", type=int, default=10000, help="cell count of part d")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per start-up figure (part c)")
    parser.add_argument("--data-root", help="CIFAR-10 as torchvision files, a folder or an archive (part c)")
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temporary one, removed)")
    parser.add_argument("--csv", type=Path, help="write the figures here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="lossbench-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"lossbench overhead benchmark · {os.cpu_count()} CPUs · load average {load_average()} · "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    try:
        if "a" in args.parts:
            part_a(args.bookkeeping, work)
        if "b" in args.parts:
            part_b(args.tiny, work)
        if "c" in args.parts:
            part_c(args.repeat, work, args.data_root)
        if "d" in args.parts:
            part_d(args.report_cells, work)
        if "s" in args.parts:
            part_s()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        if args.csv:
            with open(args.csv, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["part", "size", "figure", "value", "unit", "load_average"])
                writer.writeheader()
                writer.writerows(ROWS)


if __name__ == "__main__":
    main()
