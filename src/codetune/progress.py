"""Progress of long work on stderr (stdout keeps only the stage's summary): the one owner.

On a terminal: a rich bar (count, rate, loss, tokens/s, ETA). Anywhere else (a pipe, a log file,
CI) bars do not draw, so a plain line is printed every ``CODETUNE_PROGRESS_SECONDS`` (default 5)
seconds instead, and one when the work ends::

    train: 120/500 steps (24%), 1.52 steps/s, 3,110 tok/s, loss 4.2130, 1m19s, ETA 4m10s

``StepProgress`` is for loops with a count (train steps, eval prompts, files); ``activity`` for one
long call without one (loading a model), which reports only when it lasts. Each update is also a
long loop's heartbeat: it lets torch's thread count follow the machine's load (``codetune.threads``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TextIO, TypeVar

T = TypeVar("T")
DEFAULT_SECONDS = 5.0


def interval() -> float:
    """Seconds between two plain progress lines (``CODETUNE_PROGRESS_SECONDS``)."""
    try:
        return max(0.0, float(os.environ.get("CODETUNE_PROGRESS_SECONDS", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether progress goes to a terminal (bars) rather than a pipe or a file (plain lines)."""
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def quiet_library_bars() -> None:
    """Where no terminal is, turn off the tqdm bars of datasets, transformers and huggingface_hub:
    written to a file they are carriage-return soup; codetune's own lines say the same. Call before
    those libraries are imported; a value the user set wins."""
    if not on_terminal():
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers follows this one


def duration(seconds: float) -> str:
    """3s, 4m10s, 2h05m."""
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _rate(per_second: float, unit: str) -> str:
    """1,234 files/s, 2.5 steps/s, 12.8 s/step."""
    if per_second >= 100:
        return f"{per_second:,.0f} {unit}s/s"
    if per_second >= 1:
        return f"{per_second:.3g} {unit}s/s"
    return f"{1 / per_second:.3g} s/{unit}" if per_second > 0 else ""


def _heartbeat() -> None:
    from codetune.threads import follow_load

    if "torch" in sys.modules:  # never import torch for a loop that does not use it
        follow_load()


class StepProgress:
    """``with StepProgress("train", total) as bar: bar.update(done, loss=..., tokens=...)``."""

    def __init__(
        self,
        description: str,
        total: int,
        *,
        done: int = 0,
        enabled: bool = True,
        unit: str = "step",
        stream: TextIO | None = None,
    ):
        self.description = description
        self.total = total
        self.done = done
        self.enabled = enabled
        self.unit = unit
        self.stream = stream
        self._progress: Any = None
        self._task: Any = None
        self._plain = False
        self._started = 0.0
        self._paused = 0.0
        self._first = done
        self._printed = 0.0
        self._lines = 0
        self._stats: list[str] = []

    def __enter__(self) -> StepProgress:
        self._started = self._printed = time.perf_counter()
        _heartbeat()
        if not self.enabled:
            return self
        stream = self.stream or sys.stderr
        if not on_terminal(stream):
            self._plain = True
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
            console=Console(file=stream),
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
        if self._plain and self._lines and kind is None:
            self._print(final=True)
        self._plain = False

    def pause(self, seconds: float) -> None:
        """Time spent outside the measured work (evals, checkpoints): not counted in the rates."""
        self._paused += seconds

    def advance(self, count: int = 1, **stats: Any) -> None:
        """Add ``count`` to the count reached."""
        self.update(self.done + count, **stats)

    def update(self, done: int, *, loss: float | None = None, tokens: int | None = None) -> None:
        """Set the count reached; ``tokens`` is the total processed since the bar started."""
        self.done = done
        _heartbeat()
        if self._progress is None and not self._plain:
            return
        stats = []
        if loss is not None:
            stats.append(f"loss {loss:.4f}")
        if tokens is not None:
            stats.append(f"{tokens / self._working():,.0f} tok/s")
        self._stats = stats
        if self._progress is not None:
            self._progress.update(self._task, completed=done, stats="  ".join(stats), refresh=True)
        elif time.perf_counter() - self._printed >= interval():
            self._print()

    def _working(self) -> float:
        return max(time.perf_counter() - self._started - self._paused, 1e-9)

    def _print(self, final: bool = False) -> None:
        now = time.perf_counter()
        self._printed = now
        self._lines += 1
        seconds = self._working()
        rate = (self.done - self._first) / seconds
        parts = [f"{self.done}/{self.total} {self.unit}s"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        parts.append(_rate(rate, self.unit))
        parts += self._stats
        parts.append(duration(now - self._started))
        if final:
            parts.append("done")
        elif rate and self.total > self.done:
            parts.append(f"ETA {duration((self.total - self.done) / rate)}")
        line = f"{self.description}: " + ", ".join(p for p in parts if p)
        stream = self.stream or sys.stderr
        print(line, file=stream, flush=True)


def track(
    items: Iterable[T], description: str, total: int, *, unit: str = "item", **options: Any
) -> Iterator[T]:
    """Yield ``items``, advancing a ``StepProgress`` by one for each."""
    with StepProgress(description, total, unit=unit, **options) as bar:
        for item in items:
            yield item
            bar.advance()


@contextmanager
def activity(description: str, *, stream: TextIO | None = None) -> Iterator[None]:
    """One long call without a count (loading a model): a spinner on a terminal; elsewhere a line every
    few seconds while it lasts (``loading model X: 15s``) and one when it ends, nothing if it is quick."""
    stream = stream or sys.stderr
    if on_terminal(stream):
        from rich.console import Console

        with Console(file=stream).status(description):
            yield
        return
    started = time.perf_counter()
    stop = threading.Event()
    spoke = threading.Event()

    def report() -> None:
        while not stop.wait(max(interval(), 0.05)):
            print(f"{description}: {duration(time.perf_counter() - started)}", file=stream, flush=True)
            spoke.set()

    reporter = threading.Thread(target=report, name="codetune-progress", daemon=True)
    reporter.start()
    ended = "failed after"
    try:
        yield
        ended = "done in"
    finally:
        stop.set()
        reporter.join()
        if spoke.is_set():
            print(
                f"{description}: {ended} {duration(time.perf_counter() - started)}", file=stream, flush=True
            )


def dataset_map(data: Any, fn: Any, description: str, *, unit: str = "row", **options: Any) -> Any:
    """``data.map(fn, ...)`` (batched) counted by a ``StepProgress`` instead of datasets' own bar.

    Worker processes (``num_proc``) cannot reach this process's bar: they keep datasets' bar.
    """
    if options.get("num_proc"):
        return data.map(fn, desc=description, **options)
    import datasets

    with StepProgress(description, len(data), unit=unit) as bar:

        def counted(batch: dict[str, list[Any]], *args: Any) -> Any:
            result = fn(batch, *args)
            bar.advance(len(next(iter(batch.values()), [])))
            return result

        shown = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            return data.map(counted, **options)
        finally:
            if shown:
                datasets.enable_progress_bars()
