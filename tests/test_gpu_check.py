"""benchmarks/gpu_check.sh: the dry run exercises every step on the CPU and writes its summary; bad arguments are
refused; the GPU steps fit the 8-minute budget; every test marked gpu is in a file the check collects."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
assert _spec is not None and _spec.loader is not None
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up by name
_spec.loader.exec_module(gpu_check)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", LOSSBENCH_PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    return env


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
