"""benchmarks/gpu_check.sh: the dry run exercises every step on the CPU and writes its summary (a slow test: eight
processes; by default the suites it trains are validated and its summary is written from known figures); bad
arguments are refused; the GPU steps fit the 8-minute budget; every test marked gpu is in a file the check
collects."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from lossbench.grid import expand
from lossbench.suite import load_suite

_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
assert _spec is not None and _spec.loader is not None
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up by name
_spec.loader.exec_module(gpu_check)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", LOSSBENCH_PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    return env


@pytest.mark.slow  # by default: test_the_dry_run_suites_are_valid and test_the_summary_has_every_step_and_run
def test_dry_run_runs_every_step_and_writes_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "check"
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", str(out)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (out / "summary.md").read_text()
    assert "dry run on the CPU" in summary
    for step in ("data", "tests", "throughput", "jobs 1", "jobs 2", "pack", "grid100"):
        assert re.search(rf"^\| {step} \| ok \| [0-9.]+ \|$", summary, re.M), (step, summary)
    assert "| engine fp32 | fp32 |" in summary and "| naive, 0 workers |" in summary
    # The short grid is 8 cells, grid100 shortened to one seed is 20, all trained.
    for run, cells in (("jobs 1", 8), ("jobs 2", 8), ("pack", 8), ("grid100", 20)):
        assert re.search(rf"^\| {run} \| {cells}/{cells} \|", summary, re.M), (run, summary)
    packed = [json.loads(p.read_text()) for p in (out / "runs" / "pack8" / "cells").glob("*.json")]
    assert {r["env"]["pack_size"] for r in packed} == {8}
    assert "full grid (100 cells × 15 epochs" in summary
    assert "gpu" in (out / "logs" / "tests.log").read_text() or "skipped" in (out / "logs" / "tests.log").read_text()


@pytest.mark.parametrize(("make", "cells"), [("short_suite", 8), ("grid_suite", 20)])
def test_the_dry_run_suites_are_valid(tmp_path: Path, make: str, cells: int) -> None:
    """The suites the dry run trains, as it writes them: valid, on the CPU, with the cells its summary counts."""
    base = yaml.safe_load((REPO / "benchmarks" / "grid100.yaml").read_text())
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(getattr(gpu_check, make)(base, gpu_check.DRY, None), sort_keys=False))
    suite = load_suite(path)
    assert suite.train.device == "cpu" and suite.train.epochs == 1
    assert len(expand(suite, "digits")) == cells


def test_the_summary_has_every_step_and_run(tmp_path: Path) -> None:
    steps = [gpu_check.Step(name, [], 1.0, status="ok", wall_s=2.5)
             for name in ("data", "tests", "throughput", "jobs 1", "jobs 2", "pack", "grid100")]
    (tmp_path / "throughput.csv").write_text(
        "pipeline_name,precision,batch_size,img_per_s_median,ratio_vs_naive\n"
        "\"naive, 0 workers\",fp32,32,100.0,1.0\nengine fp32,fp32,32,300.0,3.0\n")
    steps[2].figures["rows"] = gpu_check.throughput_figures(tmp_path / "throughput.csv")
    for step, cells in zip(steps[3:], (8, 8, 8, 20)):
        records = tmp_path / step.name / "cells"
        records.mkdir(parents=True)
        for i in range(cells):
            (records / f"{i}.json").write_text(json.dumps({
                "status": "done", "metrics": {"test_acc": 0.5}, "env": {"pack_size": 1},
                "timing": {"img_per_s": 100.0, "train_time_s": 1.0, "peak_mem_mb": 10.0}}))
        step.figures = gpu_check.run_figures(tmp_path / step.name, step.wall_s)
    summary = tmp_path / "summary.md"
    gpu_check.write_summary(summary, {"device": "cpu"}, steps, True, 2, gpu_check.DRY.grid_epochs,
                            gpu_check.DRY.grid_seeds)
    text = summary.read_text()
    assert "dry run on the CPU" in text
    for step in ("data", "tests", "throughput", "jobs 1", "jobs 2", "pack", "grid100"):
        assert re.search(rf"^\| {step} \| ok \| [0-9.]+ \|$", text, re.M), (step, text)
    assert "| engine fp32 | fp32 |" in text and "| naive, 0 workers |" in text
    for run, cells in (("jobs 1", 8), ("jobs 2", 8), ("pack", 8), ("grid100", 20)):
        assert re.search(rf"^\| {run} \| {cells}/{cells} \|", text, re.M), (run, text)
    assert "full grid (100 cells × 15 epochs" in text


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    for args, message in (([], "usage"), (["--dry", str(tmp_path / "x")], "unknown option --dry"),
                          ([str(tmp_path / "a"), str(tmp_path / "b")], "one OUT folder only")):
        done = subprocess.run(["bash", "benchmarks/gpu_check.sh", *args], cwd=REPO, env=_env(), capture_output=True,
                              text=True)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not any(tmp_path.iterdir())


def test_the_gpu_steps_fit_in_eight_minutes() -> None:
    assert gpu_check.worst_case_s(gpu_check.GPU) <= gpu_check.BUDGET_S
    assert gpu_check.GPU.jobs == (1, 2, 4) and gpu_check.GPU.device == "cuda"


def test_every_gpu_test_is_collected_by_the_check() -> None:
    marked = {str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
              if "pytest.mark.gpu" in p.read_text() and p.name != "test_gpu_check.py"}
    assert marked == set(gpu_check.GPU_TEST_FILES)


def test_run_figures_count_the_images_every_cell_trained(tmp_path: Path) -> None:
    cells = tmp_path / "cells"
    cells.mkdir()
    for i, (rate, seconds, pack) in enumerate([(1000.0, 2.0, 1), (500.0, 4.0, 2), (500.0, 4.0, 2)]):
        (cells / f"{i}.json").write_text(json.dumps({
            "status": "done", "metrics": {"test_acc": 0.5 + i / 10}, "env": {"pack_size": pack},
            "timing": {"img_per_s": rate, "train_time_s": seconds, "peak_mem_mb": 100.0 + i}}))
    figures = gpu_check.run_figures(tmp_path, wall_s=10.0)
    assert figures["train_images"] == 2000 + 2000 + 2000
    assert figures["aggregate_img_per_s"] == 600.0
    assert figures["cells"] == figures["done"] == 3
    assert abs(figures["mean_test_acc"] - 0.6) < 1e-12 and figures["peak_mem_mb"] == 102.0
