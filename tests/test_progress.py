"""The plain progress display: numbered starts, epoch lines that name their cell when cells overlap."""

from __future__ import annotations

import io

from lossbench.suite import load_suite
from lossbench.grid import expand
from lossbench.progress import PlainDisplay
from lossbench.record import CellRecord, Metrics, Timings

from conftest import TINY_SUITE


def test_plain_display_with_overlapping_cells(write_suite) -> None:
    a, b = expand(load_suite(write_suite(TINY_SUITE)), "digits:sklearn")[:2]
    out = io.StringIO()
    display = PlainDisplay(out)
    display.start(2, 0)
    display.cell_start(a)
    display.cell_event(a, "epoch", {"epoch": 1, "train_loss": 1.5, "train_acc": None, "test_acc": 0.5, "epoch_s": 0.2})
    display.cell_start(b)
    display.cell_event(b, "epoch", {"epoch": 1, "train_loss": 1.25, "train_acc": 0.4, "test_acc": 0.6, "epoch_s": 0.2})
    display.cell_end(a, CellRecord(a.id, a.label, a.seed, "done", a.axes, metrics=Metrics(test_acc=0.75)))
    display.cell_end(b, CellRecord(b.id, b.label, b.seed, "failed", b.axes, error="RuntimeError: x"))
    lines = out.getvalue().splitlines()
    assert lines[0] == "2 cell(s) to run, 0 already done"
    assert lines[1].startswith("[1/2] ") and lines[3].startswith("[2/2] ")
    assert lines[2] == "    epoch 1: train loss 1.5000  test acc 0.5000  (0.2 s)"  # one cell running: no id needed
    assert f"epoch 1 ({b.id}): train loss 1.2500  train acc 0.4000  test acc 0.6000" in lines[4]
    assert lines[5].strip().startswith("done:") and a.id in lines[5] and "test acc 0.7500" in lines[5]
    assert lines[6].strip().startswith("failed:") and "RuntimeError: x" in lines[6] and "grid 2/2" in lines[6]


# --- the live display, on rich's recording console with a simulated clock -----------------------------------------

import pytest  # noqa: E402
from rich.console import Console  # noqa: E402

from lossbench.progress import GridWork, RichDisplay, finished_line, format_duration  # noqa: E402

EPOCH_S = 8.0  # simulated seconds per epoch: a 5-epoch cell takes 40 s, longer than rich's 30-second speed window


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _epoch(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 0.4321, "train_acc": 0.8765, "test_acc": 0.8123, "test_loss": 0.5555}


def _run_first_cell_and_part_of_the_second(display: RichDisplay, cells, clock: FakeClock) -> None:
    display.start(len(cells), 0)
    first, second = cells[0], cells[1]
    display.cell_start(first)
    display.cell_event(first, "cell_start", {"epochs": 5, "steps_per_epoch": 4})
    for epoch in range(1, 6):
        clock.now += EPOCH_S
        display.cell_event(first, "epoch", _epoch(epoch))
    display.cell_end(first, CellRecord(first.id, first.label, first.seed, "done", first.axes,
                                       metrics=Metrics(test_acc=0.8123), timing=Timings(train_time_s=40.0)))
    display.cell_start(second)
    display.cell_event(second, "cell_start", {"epochs": 5, "steps_per_epoch": 4})
    clock.now += EPOCH_S
    display.cell_event(second, "epoch", _epoch(1))
    clock.now += EPOCH_S / 2
    display.cell_event(second, "step", {"epoch": 2, "step": 2})


@pytest.fixture
def smoke_cells():
    from conftest import REPO

    return expand(load_suite(REPO / "suites" / "smoke.yaml"), "digits:sklearn")


@pytest.mark.parametrize("width", [80, 120, 160])
def test_live_display_shows_count_and_eta_after_the_first_long_cell(smoke_cells, width: int) -> None:
    clock = FakeClock()
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=True)
    display = RichDisplay(console, clock=clock, auto_refresh=False)
    _run_first_cell_and_part_of_the_second(display, smoke_cells, clock)
    console.export_text(clear=True)  # the record holds every frame drawn so far; keep only the next one
    display.live.refresh()
    screen = console.export_text()
    # 6.5 of 40 epochs done in 52 s: 33.5 epochs left at 0.125 epoch/s = 268 s.
    assert f"1/{len(smoke_cells)} cells" in screen and "eta 0:04:28" in screen and "0:00:52" in screen, screen
    assert "epoch 2/5" in screen and "test acc 0.8123" in screen
    assert all(len(line) <= width for line in screen.splitlines())
    display.finish()


@pytest.mark.parametrize("width", [40, 60, 80, 120, 160])
def test_narrow_lines_keep_count_eta_and_epoch_and_drop_figures_by_priority(smoke_cells, width: int) -> None:
    clock = FakeClock()
    display = RichDisplay(Console(width=width, file=io.StringIO()), clock=clock, auto_refresh=False)
    _run_first_cell_and_part_of_the_second(display, smoke_cells, clock)
    grid, cell = display.view.lines(width)
    assert len(grid) <= width and len(cell) <= width
    assert "1/8 cells" in grid and "eta 0:04:28" in grid
    assert "epoch 2/5" in cell
    figures = [f for f in ("test acc 0.8123", "train loss 0.4321", "train acc 0.8765", "test loss 0.5555") if f in cell]
    # Whatever fits is a prefix of the priority order: test accuracy goes last.
    assert figures == ["test acc 0.8123", "train loss 0.4321", "train acc 0.8765", "test loss 0.5555"][:len(figures)]
    if width >= 120:
        assert smoke_cells[1].label in cell and len(figures) >= 3
    if width <= 40:
        assert "…" in cell  # the cell's name is shortened, not its epoch count


def test_grid_work_eta_by_hand() -> None:
    work = GridWork(total_cells=4, started_at=0.0)
    assert work.eta(10.0) is None  # nothing known yet
    work.cell_started("a")
    work.cell_sized("a", 10)
    work.cell_progressed("a", 2.5)
    assert work.total() == 40 and work.done() == 2.5
    assert work.eta(5.0) == pytest.approx(37.5 / (2.5 / 5.0))
    work.cell_finished("a")  # diverged after 2.5 epochs: its whole budget counts as done
    assert work.done() == 10 and work.total() == 40
    assert work.eta(20.0) == pytest.approx(30 / (10 / 20))
    work.cell_started("b")
    work.cell_started("c")  # two at once (--jobs 2): both progress
    work.cell_progressed("b", 1.0)
    work.cell_progressed("c", 1.0)
    assert work.done() == 12 and work.eta(24.0) == pytest.approx(28 / (12 / 24))


def test_format_duration() -> None:
    assert format_duration(3723.4) == "1:02:03" and format_duration(None) == "-:--:--"
    assert format_duration(float("nan")) == "-:--:--"


def test_finished_line_keeps_result_and_time_and_shortens_the_name(smoke_cells) -> None:
    cell = smoke_cells[0]
    record = CellRecord(cell.id, cell.label, cell.seed, "diverged", cell.axes,
                        error="training loss became nan in epoch 2", timing=Timings(train_time_s=12.25))
    line = finished_line(smoke_cells[0], record, 72).plain
    assert line.startswith("diverged ") and "nan in epoch 2" in line and line.endswith("12.2 s") and len(line) <= 72
    done = CellRecord(cell.id, cell.label, cell.seed, "done", cell.axes, metrics=Metrics(test_acc=0.5))
    wide = finished_line(cell, done, 160).plain
    assert wide == f"✓ {smoke_cells[0].label} · seed {smoke_cells[0].seed}  test acc 0.5000"


def test_live_display_in_a_real_pseudo_terminal(write_suite, tmp_path, cli_env) -> None:
    """`lossbench run` on an 80-column pseudo-terminal draws the live display (not plain lines), no grid line wider
    than the terminal, and ends with the grid line showing every cell done."""
    import fcntl
    import os
    import pty
    import re
    import struct
    import subprocess
    import sys
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 80, 0, 0))
    env = {k: v for k, v in cli_env.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", "run", str(write_suite()), "--out", str(tmp_path / "o"),
                             "--no-report", "--epochs", "1"], stdin=follower, stdout=follower, stderr=follower,
                            env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0
    os.close(leader)
    raw = b"".join(chunks).decode("utf-8", "replace")
    assert "\x1b[" in raw  # drawn as a live display: cursor movements, colours
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw).replace("\r", "")
    # Frames are redrawn in place (cursor up, erase line), so several can follow each other on one text line.
    frames = re.findall(r"grid .*?eta (?:\d+:\d\d:\d\d|-:--:--)", text)
    assert frames and all(len(frame) <= 80 for frame in frames), frames
    assert "4/4 cells" in frames[-1] and frames[-1].endswith("eta 0:00:00"), frames
    assert text.count("✓ ") == 4, text


def test_finished_lines_keep_the_seed_at_any_width(smoke_cells) -> None:
    cell = smoke_cells[-1]
    record = CellRecord(cell.id, cell.label, cell.seed, "done", cell.axes, metrics=Metrics(test_acc=0.9123),
                        timing=Timings(train_time_s=3.5))
    for width in (50, 60, 80):
        line = finished_line(cell, record, width).plain
        assert f" · seed {cell.seed}  test acc 0.9123" in line and line.endswith("3.5 s"), line
        assert "…" in line  # the label gave way


def test_adaptive_range_bar_never_goes_backwards_and_eta_spans_fewest_to_most() -> None:
    """16 cells in the first round, up to 40 in all: the bar counts against 40, so rounds that add cells do not
    move it back (the issue's 88% 14/16 → 82% 19/24), and the ETA runs from 'no more rounds' to 'every cell at max'."""
    clock = FakeClock()
    start = clock.now
    display = RichDisplay(Console(width=120, file=io.StringIO()), clock=clock, auto_refresh=False)
    display.start(16, 0)
    display.plan_range(16, 40)
    fractions = []
    cell_ids = iter(range(1000))

    def train(n: int) -> None:
        for _ in range(n):
            cid = f"c{next(cell_ids)}"
            display.work.cell_started(cid)
            display.work.cell_sized(cid, 2)
            clock.now += 10.0
            display.work.cell_finished(cid)
            fractions.append(display.work.done() / display.work.total(display.work.planned_cells))

    train(14)
    grid = display.view.grid_line(120)
    # 14 of 16 done in 140 s: 2 cells (20 s) if no round follows, 26 cells (260 s) if every cell goes to max.
    assert "14/16–40 cells" in grid and "eta 0:00:20–0:04:20" in grid, grid
    train(2)
    display.next_round(8)
    train(3)
    display.next_round(7)
    train(6)
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(25 / 40)
    assert clock.now - start == 250.0
    display.finish()


def test_plain_display_gives_durations_and_the_adaptive_range(smoke_cells) -> None:
    from lossbench.progress import PlainDisplay

    stream = io.StringIO()
    display = PlainDisplay(stream)
    display.start(2, 0)
    display.plan_range(2, 6)
    cell = smoke_cells[0]
    display.cell_start(cell)
    display.cell_end(cell, CellRecord(cell.id, cell.label, cell.seed, "done", cell.axes, metrics=Metrics(test_acc=0.5)))
    out = stream.getvalue()
    assert "adaptive seeding: 2–6 cell(s) in all" in out
    last = out.strip().splitlines()[-1]
    assert "[grid 1/2–6, eta 0:00:00–0:00:0" in last and " s]" not in last, last
