"""What every figure of the report shares: the Plot it becomes in report.md, how it is written (a PNG rendered on
matplotlib's Agg canvas, no pyplot state, written atomically), its colours and its wrapped labels."""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lossbench.atomic_write import atomic_write_bytes

DPI = 110


@dataclass(frozen=True)
class Plot:
    """One PNG: its path relative to the report, its title and a one-sentence caption."""

    path: str
    title: str
    caption: str


def save_png(fig: Figure, path: Path) -> None:
    """Render to memory, then write atomically: a full disk never leaves a truncated PNG."""
    FigureCanvasAgg(fig)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(path, png.getvalue())


def wrap(text: str, width: int = 48) -> str:
    """`text` broken into lines of at most `width` characters (at spaces, never at hyphens)."""
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def palette(n: int) -> list[Any]:
    """n distinct colours: tab10 up to 10, else tab20 (repeating beyond 20)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def seeds_text(n: int) -> str:
    """`1 seed`, `3 seeds`."""
    return f"{n} seed" + ("" if n == 1 else "s")
