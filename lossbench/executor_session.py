"""What executors that keep workers between calls share: `with executor:` holds them for a whole run.

The runner enters an executor for every round of a run (adaptive seeding's rounds, tuning's), so that worker
processes, a Ray connection or data already sent stay until the run ends. Outside a `with`, each `run` call sets
up and lets go of whatever it needs itself.
"""

from __future__ import annotations

from typing import Any


class HeldBetweenCalls:
    """Counts nested `with` blocks; `close()` (the executor's own) runs when the outermost one ends."""

    _kept = 0  # depth of `with executor:` blocks

    def __enter__(self) -> Any:
        self._kept += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._kept -= 1
        if self._kept == 0:
            self.close()

    def close(self) -> None:
        """Let go of whatever the executor keeps between calls."""
        raise NotImplementedError
