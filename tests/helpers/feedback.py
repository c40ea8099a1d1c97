"""Records a test can reason about: completions with known log-probabilities and verdicts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from codetune.artifacts.records import CompletionRecord, FeedbackRecord, RecordWriter

START = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.timezone.utc)


def stamp(seconds: float) -> str:
    return (START + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def completion(ident: str, seconds: float = 0, **fields) -> CompletionRecord:
    base = {"prefix": "def add(a, b):\n    return ", "suffix": "\n", "text": "a + b", "time": stamp(seconds)}
    return CompletionRecord(id=ident, **{**base, **fields})


def verdict(ident: str, accepted: bool | None, seconds: float = 1, **fields) -> FeedbackRecord:
    event = {True: "select", False: "dismiss", None: "view"}[accepted]
    return FeedbackRecord(id=ident, event=event, accepted=accepted, time=stamp(seconds), **fields)


def write(folder: Path, rows) -> Path:
    with RecordWriter(folder) as writer:
        for row in rows:
            assert writer.append(row)
    return folder


def typed_on(count: int, files: int) -> list:
    """``count`` prompts, each with an accepted suggestion and, one typed character later, a rejected
    one (a DPO pair of nearly the same prompt), spread over ``files`` files."""
    rows = []
    for n in range(count):
        prefix = f"def f{n}(x):\n    return "
        path = f"m{n % files}.py"
        rows += [
            completion(f"a{n}", n, prefix=prefix, suffix="\n", text="x + 1", path=path),
            completion(f"b{n}", n + 0.1, prefix=prefix + "x", suffix="\n", text=" * 2 - 1", path=path),
            verdict(f"a{n}", True, n + 0.2),
            verdict(f"b{n}", False, n + 0.3),
        ]
    return rows
