"""The records folder: what was suggested in an editor and what the developer did with it.

One JSON object a line, in daily files ``records-YYYY-MM-DD.jsonl`` (UTC), two row types:

- ``completion``: one served suggestion (one choice of a response): ``id`` and ``index`` (the
  choice), ``time`` (ISO 8601, UTC), ``client`` (API key name or editor), ``model``, ``adapter``,
  ``language``, ``path`` (when the editor sent one), ``prefix``, ``suffix`` (null when none was
  sent), ``text``, ``finish_reason``, ``latency_ms``, ``mean_logprob`` (mean log-probability of the
  generated tokens), ``withheld`` (true when ``serve --min-confidence`` answered it empty: the
  editor never saw it) and ``source`` (serve, continue, ...).
- ``feedback``: what happened to it: ``id`` and ``index`` again, ``time``, ``event`` (the editor's
  word: view, select, dismiss, accept, reject), ``accepted`` (true, false, or null for a view),
  ``kept_text`` (what of it the developer kept, when known), ``select_kind`` (Tabby's partial
  accept, ``line``), ``editor_id`` (the editor's own id of the suggestion when it differs: Continue's
  ``completionId``) and ``source`` (tabby, generic, continue).

:class:`RecordWriter` appends from many threads and processes at once: every row is one
``write`` of a whole line under an exclusive ``flock``, so rows never interleave, and a row torn by
a kill (SIGKILL mid-write) is closed with a newline by the next writer, so it costs that row only.
:func:`read_records` counts what it cannot use (malformed rows, feedback for unknown ids,
duplicates, links, oversized lines) and never stops on it; :meth:`RecordSet.labeled` joins each
completion to its feedback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codetune.artifacts.paths import RECORDS_GLOB, records_file_name
from codetune.errors import InputError

logger = logging.getLogger(__name__)

COMPLETION = "completion"
FEEDBACK = "feedback"
# Longest line the reader takes (a prefix may be a whole file; nothing real comes near this).
MAX_LINE_BYTES = 16 * 1024 * 1024
# Ids come from servers and editors: a sane bound keeps a hostile client from filling memory with them.
MAX_ID_CHARS = 256
DEFAULT_MAX_BYTES = 1024**3
# At the size cap: stop keeping new rows, or remove the oldest day-files to make room.
WHEN_FULL = ("stop", "rotate")


def utc_now() -> str:
    """The current time as records spell it: ISO 8601 in UTC, milliseconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def parse_time(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time (a trailing ``Z`` allowed; naive means UTC)."""
    stamp = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.timestamp()


class _Row:
    """A record as the row written to disk: its fields under its ``type``."""

    TYPE = ""

    def row(self) -> dict[str, Any]:
        return {"type": self.TYPE, **asdict(self)}  # type: ignore[call-overload]


@dataclass
class CompletionRecord(_Row):
    """One suggestion shown (or sent) to an editor."""

    TYPE = COMPLETION

    id: str
    prefix: str
    text: str
    suffix: str | None = None
    index: int = 0
    time: str = field(default_factory=utc_now)
    client: str | None = None
    model: str | None = None
    adapter: str | None = None
    language: str | None = None
    path: str | None = None
    finish_reason: str | None = None
    latency_ms: float | None = None
    mean_logprob: float | None = None
    withheld: bool = False
    source: str = "serve"
    # Each generated token's log-probability and where its text ends in ``text`` (a suggestion cut
    # where the model turned unsure, ``serve --cut-below``, is fitted on these).
    token_logprobs: list[float] | None = None
    token_ends: list[int] | None = None


@dataclass
class FeedbackRecord(_Row):
    """What the developer did with a suggestion (one editor event)."""

    TYPE = FEEDBACK

    id: str
    event: str
    accepted: bool | None
    index: int = 0
    kept_text: str | None = None
    select_kind: str | None = None
    editor_id: str | None = None
    time: str = field(default_factory=utc_now)
    source: str = "generic"


@dataclass
class Labeled:
    """A completion with the verdict of its feedback: accepted True/False, or None (only seen, or nothing)."""

    completion: CompletionRecord
    accepted: bool | None
    kept_text: str | None
    viewed: bool

    @property
    def target(self) -> str:
        """The text the developer kept: ``kept_text`` when known, else the whole suggestion."""
        return self.kept_text if self.kept_text is not None else self.completion.text


# --- validation --------------------------------------------------------------------------------------


def _check(row: dict[str, Any], name: str, kinds: tuple[type, ...], *, required: bool = False) -> Any:
    value = row.get(name)
    if value is None:
        if required:
            raise ValueError(f"no {name!r}")
        return None
    # bool is an int to Python: a count or an index given as true is as malformed as one given as "1".
    if isinstance(value, bool) and bool not in kinds:
        raise ValueError(f"{name!r} is not {'/'.join(k.__name__ for k in kinds)}")
    if not isinstance(value, kinds):
        raise ValueError(f"{name!r} is not {'/'.join(k.__name__ for k in kinds)}")
    return value


def _check_id(row: dict[str, Any]) -> tuple[str, int]:
    ident = _check(row, "id", (str,), required=True)
    if not ident or len(ident) > MAX_ID_CHARS:
        raise ValueError(f"'id' is empty or longer than {MAX_ID_CHARS} characters")
    index = _check(row, "index", (int,)) or 0
    if index < 0:
        raise ValueError("'index' is negative")
    return ident, index


def _check_editor_id(row: dict[str, Any]) -> str | None:
    ident = _check(row, "editor_id", (str,))
    if ident is not None and not 0 < len(ident) <= MAX_ID_CHARS:
        raise ValueError(f"'editor_id' is empty or longer than {MAX_ID_CHARS} characters")
    return ident


def _check_time(row: dict[str, Any]) -> str:
    stamp = _check(row, "time", (str,), required=True)
    try:
        parse_time(stamp)
    except ValueError:
        raise ValueError(f"'time' is not an ISO 8601 time: {stamp[:40]!r}") from None
    return stamp


def _finite(value: float | None, name: str) -> float | None:
    if value is not None and not (-1e308 < float(value) < 1e308):
        raise ValueError(f"{name!r} is not a finite number")
    return None if value is None else float(value)


def _token_trace(row: dict[str, Any]) -> dict[str, Any]:
    """``token_logprobs`` and ``token_ends`` of a completion row: both or neither, as long as each
    other, log-probabilities finite and <= 0, ends rising within the text."""
    logprobs = _check(row, "token_logprobs", (list,))
    ends = _check(row, "token_ends", (list,))
    if logprobs is None and ends is None:
        return {}
    if logprobs is None or ends is None or len(logprobs) != len(ends):
        raise ValueError("'token_logprobs' and 'token_ends' come together, one entry per token")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and -1e308 < v <= 0 for v in logprobs):
        raise ValueError("'token_logprobs' holds finite log-probabilities (<= 0)")
    text_length = len(row["text"])
    previous = 0
    for end in ends:
        if not isinstance(end, int) or isinstance(end, bool) or not previous <= end <= text_length:
            raise ValueError("'token_ends' rise from 0 to the text's length")
        previous = end
    return {"token_logprobs": [float(v) for v in logprobs], "token_ends": list(ends)}


def parse_row(row: Any) -> CompletionRecord | FeedbackRecord:
    """A record from one decoded JSON line; ValueError saying what is wrong with it."""
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    kind = row.get("type")
    if kind == COMPLETION:
        ident, index = _check_id(row)
        return CompletionRecord(
            id=ident,
            index=index,
            time=_check_time(row),
            prefix=_check(row, "prefix", (str,), required=True),
            suffix=_check(row, "suffix", (str,)),
            text=_check(row, "text", (str,), required=True),
            client=_check(row, "client", (str,)),
            model=_check(row, "model", (str,)),
            adapter=_check(row, "adapter", (str,)),
            language=_check(row, "language", (str,)),
            path=_check(row, "path", (str,)),
            finish_reason=_check(row, "finish_reason", (str,)),
            latency_ms=_finite(_check(row, "latency_ms", (int, float)), "latency_ms"),
            mean_logprob=_finite(_check(row, "mean_logprob", (int, float)), "mean_logprob"),
            withheld=bool(_check(row, "withheld", (bool,))),
            source=_check(row, "source", (str,)) or "serve",
            **_token_trace(row),
        )
    if kind == FEEDBACK:
        ident, index = _check_id(row)
        return FeedbackRecord(
            id=ident,
            index=index,
            time=_check_time(row),
            event=_check(row, "event", (str,), required=True),
            accepted=_check(row, "accepted", (bool,)),
            kept_text=_check(row, "kept_text", (str,)),
            select_kind=_check(row, "select_kind", (str,)),
            editor_id=_check_editor_id(row),
            source=_check(row, "source", (str,)) or "generic",
        )
    raise ValueError(f"unknown row type {kind!r} (expected {COMPLETION!r} or {FEEDBACK!r})")


def encode_row(record: CompletionRecord | FeedbackRecord | dict[str, Any]) -> bytes:
    """One JSONL line (UTF-8, newline-terminated); a dict is validated first (ValueError)."""
    if isinstance(record, dict):
        record = parse_row(record)
    return (json.dumps(record.row(), ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


# --- writing -----------------------------------------------------------------------------------------


def _lock(fd: int) -> Callable[[], None]:
    """An exclusive lock on an open file shared by every process (flock), and its release."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the in-process lock is all there is
        return lambda: None
    fcntl.flock(fd, fcntl.LOCK_EX)
    return lambda: fcntl.flock(fd, fcntl.LOCK_UN)


class RecordWriter:
    """Appends records to a folder's daily files (the day of each record's ``time``); safe across
    threads and processes.

    ``max_bytes`` caps the folder's record files together. A row that would pass it is not written
    (``append`` returns False, ``dropped`` counts it, a warning is logged once), unless ``when_full``
    is ``rotate``: then the oldest day-files go first (``rotated`` counts them, a warning names each),
    never the one being written to. The file written to is measured under its lock, so writers of the
    same day never pass the cap together.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        fsync: bool = False,
        when_full: str = "stop",
    ) -> None:
        if max_bytes <= 0:
            raise InputError(f"the records size cap must be positive, not {max_bytes}")
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"records folder {self.folder} is a file; give a folder")
        if when_full not in WHEN_FULL:
            raise InputError(f"when the records folder is full: {' or '.join(WHEN_FULL)}, not {when_full!r}")
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.when_full = when_full
        self.dropped = 0
        self.rotated = 0
        self._lock = threading.Lock()
        self._day: str | None = None
        self._fd: int | None = None
        self._other_bytes = 0

    def _open(self, day: str) -> int:
        if day == self._day and self._fd is not None:
            return self._fd
        self.close()
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # records hold code: the owner's only
        path = self.folder / records_file_name(day)
        # O_NOFOLLOW: a link planted in place of a day's file is refused, not written through.
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            self._fd = os.open(path, flags, 0o600)
        except OSError as error:
            raise InputError(f"cannot write records to {path}: {error.strerror} (a link?)") from None
        self._day = day
        self._other_bytes = sum(size for _, size in self._other_files())
        return self._fd

    def _other_files(self) -> list[tuple[Path, int]]:
        """The folder's day-files but the one written to, oldest first, with their sizes."""
        current = records_file_name(self._day) if self._day else None
        found = []
        for item in sorted(self.folder.glob(RECORDS_GLOB)):
            with contextlib.suppress(OSError):
                if item.name != current and item.is_file() and not item.is_symlink():
                    found.append((item, item.stat().st_size))
        return found

    def _make_room(self, needed: int) -> bool:
        """Remove the oldest day-files until ``needed`` more bytes fit; whether they do."""
        for item, size in self._other_files():
            if self._other_bytes + needed <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):  # another writer removed it first
                item.unlink()
                self.rotated += 1
                logger.warning(
                    "records folder %s reached its cap of %d bytes: removed %s (%d bytes), the oldest day",
                    self.folder,
                    self.max_bytes,
                    item.name,
                    size,
                )
            self._other_bytes -= size  # gone, whoever removed it
        return self._other_bytes + needed <= self.max_bytes

    def append(self, record: CompletionRecord | FeedbackRecord | dict[str, Any]) -> bool:
        """Write one record; False when the size cap stops it."""
        if isinstance(record, dict):
            record = parse_row(record)
        line = encode_row(record)
        day = dt.datetime.fromtimestamp(parse_time(record.time), dt.timezone.utc).date().isoformat()
        with self._lock:
            fd = self._open(day)
            unlock = _lock(fd)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a torn row (a writer killed mid-line) ends here, alone
                fits = self._other_bytes + size + len(line) <= self.max_bytes
                if not fits and self.when_full == "rotate":
                    fits = self._make_room(size + len(line))
                if not fits:
                    if not self.dropped:
                        logger.warning(
                            "records folder %s reached its cap of %d bytes: new records are not kept (raise "
                            "the cap, move old day-files away, or let the oldest days go: when_full rotate)",
                            self.folder,
                            self.max_bytes,
                        )
                    self.dropped += 1
                    return False
                view = memoryview(line)
                while view:  # a signal can cut a write short: finish the line before unlocking
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
                return True
            finally:
                unlock()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- reading -----------------------------------------------------------------------------------------


@dataclass
class RecordSet:
    """Every usable record of a folder or file, and counts of what was not usable."""

    completions: dict[tuple[str, int], CompletionRecord]
    feedback: dict[tuple[str, int], list[FeedbackRecord]]
    counts: Counter
    files: list[Path]

    def labeled(self) -> list[Labeled]:
        """Each completion with its verdict, oldest first.

        Any accepting event makes it accepted (its ``kept_text`` is the last accepting event's; a
        Tabby ``select_kind: line`` without one keeps the first line); else any rejecting event makes
        it rejected; views alone leave it undecided.
        """
        out = []
        for key, completion in self.completions.items():
            events = self.feedback.get(key, [])
            accepts = [e for e in events if e.accepted is True]
            rejects = [e for e in events if e.accepted is False]
            kept = None
            if accepts:
                last = accepts[-1]
                kept = last.kept_text
                if kept is None and last.select_kind == "line":
                    kept = completion.text.split("\n", 1)[0] + ("\n" if "\n" in completion.text else "")
            verdict = True if accepts else (False if rejects else None)
            viewed = bool(events)
            out.append(Labeled(completion, verdict, kept, viewed))
        out.sort(key=lambda item: parse_time(item.completion.time))
        return out

    def summary(self) -> dict[str, Any]:
        """Counts for a report: completions, feedback, accepted, rejected, and every problem met."""
        labeled = self.labeled()
        accepted = sum(1 for item in labeled if item.accepted is True)
        rejected = sum(1 for item in labeled if item.accepted is False)
        decided = accepted + rejected
        return {
            "files": len(self.files),
            "completions": len(self.completions),
            "withheld": sum(1 for c in self.completions.values() if c.withheld),
            "feedback_events": sum(len(v) for v in self.feedback.values()),
            "accepted": accepted,
            "rejected": rejected,
            "no_feedback": len(labeled) - decided,
            "acceptance_rate": round(accepted / decided, 4) if decided else None,
            "problems": {key: value for key, value in sorted(self.counts.items()) if value},
        }


def record_files(path: Path, counts: Counter) -> list[Path]:
    """The record files of a folder (daily files, no links) or the one file given."""
    if not path.exists():
        raise InputError(f"records not found: {path}")
    if path.is_file():
        return [path]
    files = []
    for item in sorted(path.glob(RECORDS_GLOB)):
        if item.is_symlink() or not item.is_file():
            counts["skipped_not_regular_file"] += 1
            continue
        files.append(item)
    return files


def _lines(path: Path, counts: Counter, limit: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while True:
            line = handle.readline(limit + 1)
            if not line:
                return
            if len(line) > limit and not line.endswith(b"\n"):
                counts["oversized_row"] += 1
                while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass
                continue
            yield line


def read_records(
    path: str | Path, *, max_line_bytes: int = MAX_LINE_BYTES, newest_files: int | None = None
) -> RecordSet:
    """Read a records folder (or one JSONL file): completions by (id, index), feedback joined to them;
    of a folder, only its ``newest_files`` day-files when given.

    Malformed rows, feedback for ids never served, a completion id seen twice (the first one is
    kept), links and oversized lines are counted in ``counts``; none of them stops the read.
    """
    path = Path(path)
    counts: Counter = Counter()
    files = record_files(path, counts)
    if newest_files is not None:
        files = files[len(files) - newest_files :] if newest_files else []
    completions: dict[tuple[str, int], CompletionRecord] = {}
    feedback: dict[tuple[str, int], list[FeedbackRecord]] = {}
    for file in files:
        for raw in _lines(file, counts, max_line_bytes):
            if not raw.strip():
                continue
            try:
                record = parse_row(json.loads(raw))
            except (ValueError, UnicodeDecodeError, RecursionError):  # JSONDecodeError is a ValueError
                counts["malformed_row"] += 1
                continue
            key = (record.id, record.index)
            if isinstance(record, CompletionRecord):
                if key in completions:
                    counts["duplicate_completion"] += 1
                    continue
                completions[key] = record
            else:
                feedback.setdefault(key, []).append(record)
    for key in list(feedback):
        if key not in completions:
            counts["feedback_for_unknown_id"] += len(feedback.pop(key))
    for events in feedback.values():
        events.sort(key=lambda e: parse_time(e.time))
    return RecordSet(completions, feedback, counts, files)


def typed_after(items: list[Labeled]) -> dict[int, str]:
    """For item ``i``: the rest of its cursor's line as the developer typed it, when a later prompt of
    the same client and file (same suffix) extends its prefix past the end of that line."""
    chains: dict[tuple, list[int]] = {}
    for index, item in enumerate(items):
        c = item.completion
        chains.setdefault((c.client, c.path, c.suffix), []).append(index)
    typed: dict[int, str] = {}
    for members in chains.values():
        for position, index in enumerate(members):
            prefix = items[index].completion.prefix
            longest = ""
            for later in members[position + 1 :]:
                other = items[later].completion.prefix
                if not other.startswith(prefix):
                    break  # the developer moved away: what came after is another edit
                longest = other[len(prefix) :]
                if "\n" in longest:
                    break
            if "\n" in longest:
                typed[index] = longest.split("\n", 1)[0] + "\n"
    return typed


__all__ = [
    "COMPLETION",
    "FEEDBACK",
    "CompletionRecord",
    "FeedbackRecord",
    "Labeled",
    "RecordSet",
    "RecordWriter",
    "encode_row",
    "parse_row",
    "parse_time",
    "read_records",
    "typed_after",
    "utc_now",
]
