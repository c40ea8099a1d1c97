"""One rich progress bar for long loops (train steps, eval items): count, loss, tokens/s, ETA.

Drawn on stderr, so stdout keeps only the stage's summary. Off on non-main processes.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any


class StepProgress:
    """``with StepProgress("train", total) as bar: bar.update(done, loss=..., tokens=...)``."""

    def __init__(
        self, description: str, total: int, *, done: int = 0, enabled: bool = True, unit: str = "step"
    ):
        self.description = description
        self.total = total
        self.done = done
        self.enabled = enabled
        self.unit = unit
        self._progress: Any = None
        self._task: Any = None
        self._started = 0.0
        self._paused = 0.0

    def __enter__(self) -> StepProgress:
        self._started = time.perf_counter()
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn(f"{self.unit}"),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
            # Redrawn on update only: a refresh thread would take the GIL from the loop it measures.
            auto_refresh=False,
        )
        self._progress.__enter__()
        self._task = self._progress.add_task(
            self.description, total=self.total, completed=self.done, stats=""
        )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(kind, error, trace)
            self._progress = None

    def pause(self, seconds: float) -> None:
        """Time spent outside the measured work (evals, checkpoints): not counted in tokens/s."""
        self._paused += seconds

    def update(self, done: int, *, loss: float | None = None, tokens: int | None = None) -> None:
        """Set the count reached; ``tokens`` is the total processed since the bar started."""
        self.done = done
        if self._progress is None:
            return
        stats = []
        if loss is not None:
            stats.append(f"loss {loss:.4f}")
        if tokens is not None:
            seconds = max(time.perf_counter() - self._started - self._paused, 1e-9)
            stats.append(f"{tokens / seconds:,.0f} tok/s")
        self._progress.update(self._task, completed=done, stats="  ".join(stats), refresh=True)
