"""The plain progress display: numbered starts, epoch lines that name their cell when cells overlap."""

from __future__ import annotations

import io

from lossbench.config import load_suite
from lossbench.grid import expand
from lossbench.progress import PlainDisplay

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
    display.cell_end(a, {"status": "done", "metrics": {"test_acc": 0.75}})
    display.cell_end(b, {"status": "failed", "metrics": {}, "error": "RuntimeError: x"})
    lines = out.getvalue().splitlines()
    assert lines[0] == "2 cell(s) to run, 0 already done"
    assert lines[1].startswith("[1/2] ") and lines[3].startswith("[2/2] ")
    assert lines[2] == "    epoch 1: train loss 1.5000  test acc 0.5000  (0.2 s)"  # one cell running: no id needed
    assert f"epoch 1 ({b.id}): train loss 1.2500  train acc 0.4000  test acc 0.6000" in lines[4]
    assert lines[5].strip().startswith("done:") and a.id in lines[5] and "test acc 0.7500" in lines[5]
    assert lines[6].strip().startswith("failed:") and "RuntimeError: x" in lines[6] and "grid 2/2" in lines[6]
