"""The command line through typer's CliRunner: validate, list, run, and every bad-input path (exit code 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lossbench.cli import app
from lossbench.store import ResultsStore

from conftest import REPO, TINY_SUITE

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_validate_prints_cells_and_grid() -> None:
    result = invoke("validate", str(REPO / "suites" / "smoke.yaml"))
    assert result.exit_code == 0, result.output
    assert "8 cell(s)" in result.output and "cross_entropy" in result.output and "crop(padding=1)" in result.output


def test_validate_json_lists_cells(write_suite) -> None:
    result = invoke("validate", str(write_suite()), "--json")
    cells = json.loads(result.output)
    assert result.exit_code == 0 and len(cells) == 4 and {"id", "label", "seed", "loss"} <= set(cells[0])


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        ("epochs: 2", "epoch: 2", ["unknown key 'epoch'", "did you mean 'epochs'", "suite.yaml:8"]),
        ("loss: [cross_entropy, mse]", "loss: [cross_entropy, msee]", ["unknown loss 'msee'", "did you mean 'mse'",
                                                                       "allowed:", "grid.loss[1]"]),
        ("lr: 0.05", "lr: -1", ["lr must be > 0", "train.optimizer"]),
        ("  name: digits", "  name: digits\n  root: /nonexistent/data", ["/nonexistent/data"]),
    ],
)
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(write_suite, tmp_path: Path, old: str, new: str,
                                                                   needles: list[str]) -> None:
    out = tmp_path / "results"
    for command in ("validate", "run"):
        args = [command, str(write_suite(TINY_SUITE.replace(old, new)))] + (["--out", str(out)] if command == "run" else [])
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        for needle in needles:
            assert needle in result.output, result.output
        assert "Traceback" not in result.output
    assert not out.exists()


def test_missing_suite_file(tmp_path: Path) -> None:
    result = invoke("run", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2 and "suite file not found" in result.output


def test_invalid_yaml(write_suite) -> None:
    result = invoke("validate", str(write_suite("name: x\ngrid: [\n")))
    assert result.exit_code == 2 and "invalid YAML" in result.output and "suite.yaml:3" in result.output


def test_archive_without_train_and_test(write_suite, tmp_path: Path) -> None:
    import tarfile

    archive = tmp_path / "images.tar.gz"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("x")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "other", arcname="other")
    result = invoke("validate", str(write_suite(TINY_SUITE.replace("name: digits", "name: image_folder"))),
                    "--data-root", str(archive))
    assert result.exit_code == 2 and "train" in result.output and "images.tar.gz" in result.output


def test_bad_seeds_option(write_suite) -> None:
    result = invoke("run", str(write_suite()), "--seeds", "0,x")
    assert result.exit_code == 2 and "--seeds" in result.output


def test_cuda_requested_without_a_gpu(write_suite, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = invoke("run", str(write_suite()), "--device", "cuda", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "no CUDA GPU" in result.output
    assert not (tmp_path / "r").exists()


def test_debug_shows_the_traceback(write_suite) -> None:
    result = invoke("validate", str(write_suite(TINY_SUITE.replace("epochs: 2", "epochs: 0"))), "--debug")
    assert result.exit_code != 0 and result.exception is not None


def test_list_everything_and_one_kind() -> None:
    result = invoke("list")
    assert result.exit_code == 0
    for kind in ("losses", "regularizers", "augmentations", "models", "datasets", "optimizers", "schedules"):
        assert kind in result.output
    losses = invoke("list", "losses")
    assert losses.exit_code == 0 and "cross_entropy" in losses.output and "over" in losses.output
    assert "tutorial_cnn" in invoke("list", "model").output  # singular accepted


def test_list_json_has_params_and_defaults() -> None:
    data = json.loads(invoke("list", "augmentations", "--json").output)
    crop = next(c for c in data["augmentations"] if c["name"] == "crop")
    assert {"name": "padding", "type": "int", "default": 4, "required": False} in crop["params"]


def test_list_unknown_kind_suggests() -> None:
    result = invoke("list", "lossess")
    assert result.exit_code == 2 and "did you mean 'losses'" in result.output


def test_run_writes_results_skips_on_rerun_and_forces(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    suite = write_suite(TINY_SUITE.replace("augmentation: [none, crop]", "augmentation: [none]"))
    out = tmp_path / "out"
    # No report: test_report.py's test_run_writes_the_report_unless_told_not_to checks the one a run writes.
    args = ["run", str(suite), "--out", str(out), "--cache-dir", str(cache_dir), "--epochs", "1", "--no-report"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    files = sorted((out / "cells").glob("*.json"))
    assert len(files) == 2 and (out / "results.csv").exists() and (out / "suite.yaml").exists()
    assert "ran 2, skipped 0" in first.output
    stamps = {f.name: json.loads(f.read_text())["started_at"] + str(f.stat().st_mtime_ns) for f in files}

    again = invoke(*args)
    assert again.exit_code == 0 and "ran 0, skipped 2" in again.output
    assert stamps == {f.name: json.loads(f.read_text())["started_at"] + str(f.stat().st_mtime_ns) for f in files}

    forced = invoke(*args, "--force")
    assert forced.exit_code == 0 and "ran 2, skipped 0" in forced.output


def test_second_concurrent_run_is_refused(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "out"
    with ResultsStore(out):
        result = invoke("run", str(write_suite()), "--out", str(out), "--cache-dir", str(cache_dir))
    assert result.exit_code == 2 and "in use by" in result.output
    assert "cell(s)" not in result.output  # refused before the run's header, not after it
    assert not (out / "cells").exists()


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(write_suite, tmp_path: Path, cache_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "custom_losses.py").write_text(
        "import torch\n"
        "class Exploding(torch.nn.Module):\n"
        "    '''Raises on every call.'''\n"
        "    head = 'logits'\n"
        "    def forward(self, outputs, targets):\n"
        "        raise RuntimeError('custom loss failed on purpose')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    text = TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: ['custom_losses:Exploding', cross_entropy]").replace(
        "augmentation: [none, crop]", "augmentation: [none]")
    out = tmp_path / "out"
    result = invoke("run", str(write_suite(text)), "--out", str(out), "--cache-dir", str(cache_dir), "--epochs", "1")
    assert result.exit_code == 1, result.output
    records = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    status = {r["axes"]["loss"]: r for r in records}
    assert status["custom_losses:Exploding"]["status"] == "failed"
    assert "custom loss failed on purpose" in status["custom_losses:Exploding"]["traceback"]
    assert status["cross_entropy"]["status"] == "done"


def test_python_dash_m_works_the_same() -> None:
    result = subprocess.run([sys.executable, "-m", "lossbench", "list", "models"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "deep_cnn" in result.stdout
