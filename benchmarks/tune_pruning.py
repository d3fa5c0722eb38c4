"""Hyperband pruning against no pruning: the same tuned grid twice, what each verdict measures and what each costs.

One grid (default: cross_entropy, focal and MSE over outputs for `tutorial_cnn` on 8×8 digits with a 20 %
validation split, SGD with a cosine schedule) is tuned twice with the same TPE sampler, seed and budget
(`--trials` trials per cell of learning rate, momentum and focal's gamma, chosen on validation accuracy), once with
`pruner: none` and once with `pruner: hyperband` (1 to `--epochs` epochs, reduction factor 3). Each verdict trains
the chosen values on the same `--seeds` seeds. The script prints, per cell, the verdict's mean test accuracy under
each pruner, their paired difference (seed by seed) with its 95 % t interval, and the epochs each study spent;
then the totals: the epochs Hyperband spent as a fraction of those without pruning.

"Within the seeds' noise" means the 95 % interval of the paired difference covers 0. A Markdown table is printed
at the end for docs/tuning.md.

    uv run python benchmarks/tune_pruning.py --trials 10 --seeds 4   # 9 minutes on 2 cores at load 11-15
    uv run python benchmarks/tune_pruning.py --trials 20 --seeds 5 --jobs 4
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from scipy import stats

SUITE = """\
name: tune-pruning-{pruner}
dataset:
  name: digits
  val_fraction: 0.2
model:
  name: tutorial_cnn
train:
  epochs: {epochs}
  batch_size: 64
  optimizer: {{name: sgd, lr: 0.03, momentum: 0.9}}
  schedule: cosine
  device: {device}
  threads: 1
seeds: [{seeds}]
tune:
  trials: {trials}
  metric: val_acc
  sampler: tpe
  pruner: {pruner}
  seed: 0
  space:
    train.optimizer.lr: {{low: 1.0e-3, high: 1.0, log: true}}
    train.optimizer.momentum: {{low: 0.5, high: 0.95}}
    loss.gamma: {{low: 0.0, high: 5.0}}
grid:
  loss: [cross_entropy, focal, {{name: mse, over: outputs}}]
"""


def run_suite(text: str, out: Path, jobs: int) -> float:
    """Run one suite into `out` (resuming what is there); returns the wall seconds."""
    from lossbench.suite import load_suite
    from lossbench.runner import plan, run

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "suite.yaml"
        path.write_text(text, encoding="utf-8")
        suite = load_suite(path)
    executor = None
    if jobs > 1:
        from lossbench.parallel import ProcessExecutor

        executor = ProcessExecutor(jobs, threads_per_job=1)
    t0 = time.perf_counter()
    run(plan(suite, out), executor=executor)
    return time.perf_counter() - t0


def verdicts(out: Path) -> dict[str, dict[int, float]]:
    """cell label → seed → test accuracy of the verdict cells."""
    from lossbench.store import ResultsStore

    table: dict[str, dict[int, float]] = {}
    for record in ResultsStore(out).records():
        if record.status == "done" and "tuned" in record.config:
            table.setdefault(record.label, {})[record.seed] = float(record.metrics.test_acc)
    return table


def epochs_spent(out: Path) -> dict[str, int]:
    """cell label → epochs its tuning trials trained (tuning.csv)."""
    spent: dict[str, int] = {}
    with open(out / "tuning.csv", newline="") as f:
        for row in csv.DictReader(f):
            spent[row["cell"]] = spent.get(row["cell"], 0) + int(row["epochs"])
    return spent


def paired_interval(diffs: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95 % t interval) of paired differences."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, math.inf
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench-tune-pruning"),
                        help="Where both runs write (two subdirectories; a rerun resumes them).")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--seeds", type=int, default=5, help="Verdict seeds per cell (0 … N−1).")
    parser.add_argument("--jobs", type=int, default=1, help="Cells trained at once (--jobs of lossbench run).")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    seeds = ", ".join(str(s) for s in range(args.seeds))
    results = {}
    for pruner in ("none", "hyperband"):
        text = SUITE.format(pruner=pruner, epochs=args.epochs, seeds=seeds, trials=args.trials, device=args.device)
        out = args.out / pruner
        wall = run_suite(text, out, args.jobs)
        results[pruner] = (verdicts(out), epochs_spent(out), wall)
        print(f"pruner {pruner}: {wall:.0f} s wall (this run; 0 if it was already complete)", flush=True)

    none_acc, none_epochs, _ = results["none"]
    hb_acc, hb_epochs, _ = results["hyperband"]
    load = os.getloadavg()
    print(f"\n{args.trials} trials × {len(none_acc)} cells × {args.epochs} epochs, verdict on {args.seeds} seeds; "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
    header = ("| cell | test acc, none | test acc, hyperband | hyperband − none (95 % CI), pp | within noise | "
              "epochs none | epochs hyperband |")
    lines = [header, "| --- | ---: | ---: | ---: | :---: | ---: | ---: |"]
    for label in none_acc:
        common = sorted(set(none_acc[label]) & set(hb_acc.get(label, {})))
        diffs = [100 * (hb_acc[label][s] - none_acc[label][s]) for s in common]
        mean, half = paired_interval(diffs)
        within = "yes" if abs(mean) <= half else "no"
        escaped = label.replace("|", "\\|")  # a cell label's bars would end the Markdown cell
        lines.append(f"| {escaped} | {100 * statistics.fmean(none_acc[label].values()):.2f} % | "
                     f"{100 * statistics.fmean(hb_acc[label].values()):.2f} % | {mean:+.2f} ± {half:.2f} | {within} | "
                     f"{none_epochs[label]} | {hb_epochs[label]} |")
    total_none, total_hb = sum(none_epochs.values()), sum(hb_epochs.values())
    print("\n".join(lines))
    print(f"\nepochs of tuning: none {total_none}, hyperband {total_hb} = {total_hb / total_none:.0%} of none")
    print(f"fraction_of_epochs={total_hb / total_none:.3f}")


if __name__ == "__main__":
    main()
