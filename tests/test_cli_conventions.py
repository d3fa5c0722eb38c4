"""Command-line conventions: --version, -h, shell completion, enumerations shown with their choices, flags shown
as flags, usage lines naming their arguments, short options."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lossbench import __version__
from lossbench.cli import app
from lossbench.record import CellRecord, Metrics, Timings

from conftest import REPO

runner = CliRunner()


def help_text(*args: str) -> str:
    result = runner.invoke(app, [*args, "-h"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_package_version(flag: str) -> None:
    result = runner.invoke(app, [flag])
    assert result.exit_code == 0 and result.output.strip() == f"lossbench {__version__}"


def test_version_of_the_installed_console_script() -> None:
    done = subprocess.run([sys.executable, "-m", "lossbench", "--version"], capture_output=True, text=True, cwd=REPO)
    from importlib.metadata import version

    assert done.returncode == 0 and done.stdout.strip() == f"lossbench {version('lossbench')}"


@pytest.mark.parametrize("command", ["run", "report", "validate", "list"])
def test_dash_h_is_help_for_every_command(command: str) -> None:
    assert f"Usage: lossbench {command} [OPTIONS]" in help_text(command)


def test_usage_names_the_arguments() -> None:
    assert "Usage: lossbench run [OPTIONS] SUITE " in help_text("run")
    assert "Usage: lossbench validate [OPTIONS] SUITE " in help_text("validate")
    assert "Usage: lossbench report [OPTIONS] [RESULTS_DIR]..." in help_text("report")
    assert "Usage: lossbench list [OPTIONS] [KIND]" in help_text("list")


def test_completion_can_be_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    text = help_text()
    assert "--install-completion" in text and "--show-completion" in text
    # Typer asks the process tree which shell it runs in; a test run started without one (in the background, by a
    # scheduler) has none, so the shell is pinned to the one this test asks for.
    monkeypatch.setattr("typer.completion._get_shell_name", lambda: "bash")
    script = runner.invoke(app, ["--show-completion", "bash"])  # what --install-completion would add to ~/.bashrc
    assert script.exit_code == 0 and "_LOSSBENCH_COMPLETE=complete_bash" in script.output


def test_enumerations_show_their_choices_and_flags_show_no_type() -> None:
    run_help, report_help = help_text("run"), help_text("report")
    assert "[auto|cpu|cuda|mps]" in run_help and "[local|ray]" in run_help
    assert "[object_store|worker_cache]" in run_help and "[md|csv|latex|json]" in report_help
    for text in (run_help, report_help, help_text()):
        assert "<bool>" not in text
    force = next(line for line in run_help.splitlines() if "--force" in line)
    assert "-f " in force and "Rerun every cell" in force


@pytest.mark.parametrize(("words", "expected"), [
    ("lossbench run s.yaml --device c", ["cpu", "cuda"]),
    ("lossbench run s.yaml --executor r", ["ray"]),
    ("lossbench report -f l", ["latex"]),
    ("lossbench list mo", ["models"]),
])
def test_shell_completion_offers_the_choices(words: str, expected: list[str]) -> None:
    env = {**os.environ, "_LOSSBENCH_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - 1)}
    script = Path(sys.executable).with_name("lossbench")  # completion is keyed on the console script's name
    done = subprocess.run([str(script)], capture_output=True, text=True, env=env, cwd=REPO)
    assert done.stdout.split() == expected, done.stdout + done.stderr


def test_short_options_work(write_suite, tmp_path, cache_dir) -> None:
    """-e, -s, -d, -o and -f reach the same places as their long forms: one epoch, one seed, results in -o."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(write_suite()), "-e", "1", "-s", "3", "-d", "cpu", "-o", str(out),
                                 "--no-report", "--plain", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    assert "1 epoch(s)" in result.output and "seed 3" in result.output and (out / "results.csv").exists()
    again = runner.invoke(app, ["run", str(write_suite()), "-e", "1", "-s", "3", "-o", str(out), "-f", "--no-report",
                                "--plain", "--cache-dir", str(cache_dir)])
    assert again.exit_code == 0 and "ran 4, skipped 0" in again.output, again.output


def test_an_unknown_device_is_still_checked_by_lossbench(write_suite) -> None:
    """The choices are shown, not enforced by the parser, so the library's message (with a suggestion) is kept."""
    result = runner.invoke(app, ["run", str(write_suite()), "--device", "cpux"])
    assert result.exit_code == 2 and "cpux" in result.output and "Traceback" not in result.output


def _record(label: str, seed: int, acc: float) -> CellRecord:
    return CellRecord(id=f"c{seed}", label=label, seed=seed, status="done", axes={},
                      metrics=Metrics(test_acc=acc, test_nll=0.25, ece=0.031, gap=0.012),
                      timing=Timings(train_time_s=123.4))


@pytest.mark.parametrize("width", [60, 80, 120, 160])
def test_closing_table_fits_the_terminal(width: int) -> None:
    """One row per cell; the cell's name wraps first, then optional columns go (timing first); seeds and accuracy
    stay."""
    import io

    from rich.console import Console

    from lossbench.cli.tables import cells_table

    label = "mse(over=probabilities) | l2(weight=1e-4) | hflip+crop(padding=4)"
    records = [_record(label, 0, 0.91), _record(label, 1, 0.93), _record(label, 2, 0.92),
               _record("cross_entropy | none | none", 0, 0.93)]
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(cells_table(records, "smoke", width))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    # The three seeds make one row: mean 0.9200 and the ± of its 95% t-interval, t(0.975, 2) · 0.01 / √3.
    assert "test acc" in text and "0.9300" in text and "0.9200" in text and "0.9100" not in text
    assert "±0.0248" in text
    header = next(line for line in text.splitlines() if "test acc" in line)
    assert ("train s" in header) == (width >= 120)
    assert "seeds" in header and "95% CI" in header
    if width >= 80:
        assert all(col in header for col in ("ECE", "NLL", "gap"))
    if width >= 160:
        assert label in text  # one line per cell
    rows = [line for line in text.splitlines() if "0.9" in line]
    assert len(rows) == 2


def test_closing_table_of_a_large_grid_lists_the_best_and_the_worst_cells() -> None:
    import io

    from rich.console import Console

    from lossbench.cli import tables

    n = tables.TABLE_ROWS + 60
    records = [_record(f"loss{i:03d} | none | none", 0, 0.99 - i / 1000) for i in range(n)]
    console = Console(width=100, file=io.StringIO(), record=True)
    console.print(tables.cells_table(records, "big", 100))
    text = console.export_text()
    shown = [line for line in text.splitlines() if "loss" in line]
    assert len(shown) == tables.TABLE_BEST + tables.TABLE_WORST
    assert "loss000" in text and f"loss{n - 1:03d}" in text and f"loss{tables.TABLE_BEST:03d}" not in text
    assert f"… {n - tables.TABLE_BEST - tables.TABLE_WORST} more cells" in text
