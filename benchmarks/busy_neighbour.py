"""Thread policies on a busy CPU: the smoke suite under each policy, with and without a busy-looping neighbour.

Each run is the real command, `python -m lossbench run SUITE --force --no-report --plain`, in a fresh process. The
policies and conditions take turns inside every round (round 1: every policy without, then with, the neighbour;
round 2: the same again), so a change in the machine's load hits them alike. The neighbour is one process that
spins on the CPU (`while True: pass`), started before and stopped after each run that has it.

For each run it records the wall time of the whole command, the summed training seconds of its cells (from the
result files: start-up and evaluation excluded), the threads each cell trained with, and the 1-minute load
average before and after. It prints a table of the median per policy and condition, each policy's ratio to the
best policy under that condition, and writes one CSV row per run.

    uv run python benchmarks/busy_neighbour.py --rounds 2 --csv /tmp/busy.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Policy:
    """A thread setting as a user would give it: the --threads value and extra environment variables."""

    name: str
    threads: str | None  # None: the suite's default (auto)
    env: tuple[tuple[str, str], ...] = ()


POLICIES = [
    Policy("auto (default)", None),
    Policy("--threads 2 (torch's default)", "2"),
    Policy("--threads 2, OMP_WAIT_POLICY=PASSIVE", "2", (("OMP_WAIT_POLICY", "PASSIVE"),)),
    Policy("--threads 1", "1"),
]


def _spin() -> None:
    while True:
        pass


def run_once(suite: Path, policy: Policy, out: Path, extra: list[str]) -> dict[str, object]:
    """One lossbench run; returns its wall seconds, summed training seconds, threads per cell and load."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    env.update(dict(policy.env))
    command = [sys.executable, "-m", "lossbench", "run", str(suite), "--force", "--no-report", "--plain",
               "--out", str(out), *extra]
    if policy.threads is not None:
        command += ["--threads", policy.threads]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    records = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    return {
        "wall_s": wall,
        "train_s": sum(r["timing"]["train_time_s"] for r in records),
        "threads": "/".join(sorted({str(r["env"].get("threads")) for r in records})),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", type=Path, default=REPO / "suites" / "smoke.yaml")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="Override the suite's epochs (shorter runs).")
    parser.add_argument("--csv", type=Path, default=None, help="One row per run.")
    parser.add_argument("--no-idle", action="store_true", help="Only the runs beside the busy neighbour.")
    parser.add_argument("--skip", action="append", default=[], metavar="WORD",
                        help="Leave out the policies whose name contains WORD (repeatable), e.g. --skip 'torch'.")
    args = parser.parse_args()
    policies = [p for p in POLICIES if not any(word in p.name for word in args.skip)]
    if not policies or policies[0] is not POLICIES[0]:
        parser.error("the default policy (auto) cannot be skipped: it is what the runs are compared with")
    extra = ["--epochs", str(args.epochs)] if args.epochs else []
    conditions = [True] if args.no_idle else [False, True]
    rows: list[dict[str, object]] = []
    context = multiprocessing.get_context("spawn")
    print(f"cores {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}, "
          f"load at start {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(1, args.rounds + 1):
            for neighbour in conditions:
                for policy in policies:
                    spinner = context.Process(target=_spin, daemon=True) if neighbour else None
                    if spinner is not None:
                        spinner.start()
                        time.sleep(1.0)  # let it take its core before the run starts
                    try:
                        row = run_once(args.suite, policy, Path(tmp) / f"r{round_no}", extra)
                    finally:
                        if spinner is not None:
                            spinner.terminate()
                            spinner.join()
                    row = {"round": round_no, "neighbour": neighbour, "policy": policy.name, **row}
                    rows.append(row)
                    print(f"round {round_no} {'busy neighbour' if neighbour else 'no neighbour  '} "
                          f"{policy.name:38s} wall {row['wall_s']:6.1f} s  train {row['train_s']:6.1f} s  "
                          f"threads {row['threads']}  load {row['load_before']:.2f} → {row['load_after']:.2f}",
                          flush=True)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print("\nmedian over rounds (ratio = this policy's wall time / the best policy's, same condition)")
    for neighbour in conditions:
        medians = {p.name: (statistics.median(r["wall_s"] for r in rows if r["policy"] == p.name
                                              and r["neighbour"] == neighbour),
                            statistics.median(r["train_s"] for r in rows if r["policy"] == p.name
                                              and r["neighbour"] == neighbour)) for p in policies}
        best = min(w for w, _ in medians.values())
        loads = [r["load_before"] for r in rows if r["neighbour"] == neighbour]
        print(f"{'busy neighbour' if neighbour else 'no neighbour'} (load {min(loads):.1f}–{max(loads):.1f}):")
        for name, (wall, train) in medians.items():
            print(f"  {name:38s} wall {wall:6.1f} s  train {train:6.1f} s  ratio {wall / best:.2f}")
    default = statistics.median(r["wall_s"] for r in rows if r["policy"] == policies[0].name and r["neighbour"])
    best_manual = min(statistics.median(r["wall_s"] for r in rows if r["policy"] == p.name and r["neighbour"])
                      for p in policies[1:])
    print(f"default_vs_best_manual_under_neighbour={default / best_manual:.2f}")


if __name__ == "__main__":
    main()
