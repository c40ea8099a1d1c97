"""Continue's autocomplete dev data -> a records folder.

Continue writes one JSON line per autocomplete outcome to ``~/.continue/dev_data/0.2.0/autocomplete.jsonl``
(``0.1.0/`` in older versions): ``accepted`` is true when the developer took the suggestion, false
when it was shown and not taken within 10 seconds. Each line carries ``completionId``, ``prefix``,
``suffix``, ``completion``, ``prompt``, ``modelName``, ``modelProvider``, ``filepath`` (a URI),
``time`` (latency, ms), ``timestamp`` (ISO 8601), ``cacheHit``, ``userAgent`` and Continue's options.
Continue's DataLogger appends each line with one ``writeFileSync(path, line + "\\n", {flag: "a"})``
and never rotates the file. Sources: docs/editors.md.

:func:`import_continue` imports a file once (``codetune records import-continue``);
:class:`AppendedLines` follows one as it is written (``codetune serve --continue-log``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from codetune.artifacts.records import (
    MAX_ID_CHARS,
    MAX_LINE_BYTES,
    CompletionRecord,
    FeedbackRecord,
    RecordWriter,
    parse_time,
    read_records,
)
from codetune.errors import InputError
from codetune.files import write_json
from codetune.languages import language_for_path

EVENT_NAME = "autocomplete"


def _path_of(filepath: str) -> str:
    """A file URI as a plain path (Continue logs ``file:///...``); anything else as it is."""
    parsed = urlparse(filepath)
    return unquote(parsed.path) if parsed.scheme == "file" else filepath


def continue_records(row: Any) -> tuple[CompletionRecord, FeedbackRecord | None]:
    """The completion (and, when ``accepted`` is given, the feedback) of one dev-data line.

    ValueError says why a line cannot be used (another event, a field of the wrong type).
    """
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    if row.get("eventName", EVENT_NAME) != EVENT_NAME:
        raise ValueError(f"not an autocomplete event ({row.get('eventName')!r})")
    for name in ("completionId", "prefix", "suffix", "completion", "timestamp"):
        if not isinstance(row.get(name), str):
            raise ValueError(f"no {name!r} string")
    ident = row["completionId"]
    if not ident or len(ident) > MAX_ID_CHARS:
        raise ValueError("'completionId' is empty or too long")
    parse_time(row["timestamp"])
    accepted = row.get("accepted")
    if accepted is not None and not isinstance(accepted, bool):
        raise ValueError("'accepted' is not true/false")
    latency = row.get("time")
    filepath = row.get("filepath")
    path = _path_of(filepath) if isinstance(filepath, str) and filepath else None
    language = language_for_path(path) if path else None
    agent = row.get("userAgent")
    completion = CompletionRecord(
        id=ident,
        time=row["timestamp"],
        prefix=row["prefix"],
        suffix=row["suffix"],
        text=row["completion"],
        client=agent if isinstance(agent, str) and agent else "continue",
        model=row.get("modelName") if isinstance(row.get("modelName"), str) else None,
        language=language.name if language else None,
        path=path,
        latency_ms=float(latency)
        if isinstance(latency, int | float) and not isinstance(latency, bool)
        else None,
        source="continue",
    )
    if accepted is None:
        return completion, None
    feedback = FeedbackRecord(
        id=ident,
        event="accept" if accepted else "reject",
        accepted=accepted,
        time=row["timestamp"],
        source="continue",
    )
    return completion, feedback


def import_continue(source: str | Path, out: str | Path, *, max_bytes: int | None = None) -> dict[str, Any]:
    """Append a Continue dev-data file's autocomplete outcomes to the records folder ``out``.

    Lines already imported (same completion id) are skipped, so importing the file again as it grows
    adds only the new lines. Returns counts: imported, accepted, rejected, no_feedback, skipped
    (already_imported, malformed, not_autocomplete) and dropped_by_size_cap.
    """
    source = Path(source)
    if not source.is_file():
        raise InputError(f"Continue dev-data file not found: {source} (look in ~/.continue/dev_data/0.2.0/)")
    out = Path(out)
    seen = set(read_records(out).completions) if out.is_dir() else set()
    counts: Counter = Counter()
    writer = RecordWriter(out, **({"max_bytes": max_bytes} if max_bytes else {}))
    with writer, source.open("rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                completion, feedback = continue_records(row)
            except (ValueError, UnicodeDecodeError, RecursionError) as error:
                counts["not_autocomplete" if "not an autocomplete" in str(error) else "malformed"] += 1
                continue
            key = (completion.id, completion.index)
            if key in seen:
                counts["already_imported"] += 1
                continue
            if not writer.append(completion) or (feedback is not None and not writer.append(feedback)):
                counts["dropped_by_size_cap"] += 1
                continue
            seen.add(key)
            counts["imported"] += 1
            verdict = "no_feedback" if feedback is None else ("accepted" if feedback.accepted else "rejected")
            counts[verdict] += 1
    if not counts["imported"] and not counts["already_imported"]:
        raise InputError(
            f"{source}: no autocomplete outcomes found ({counts['malformed']} malformed line(s), "
            f"{counts['not_autocomplete']} of other events); give Continue's dev_data/0.2.0/autocomplete.jsonl"
        )
    return {
        name: counts[name]
        for name in (
            "imported",
            "accepted",
            "rejected",
            "no_feedback",
            "already_imported",
            "malformed",
            "not_autocomplete",
            "dropped_by_size_cap",
        )
    }


# Bytes of the file's start remembered with the position: a file rewritten in place (same inode, as
# long as before or longer) is told from the one that was read by them.
HEAD_BYTES = 4096
READ_BYTES = 1 << 20


class AppendedLines:
    """The complete lines appended to one file since the last read, as a writer appends them.

    A last line without its newline waits for it. A line over ``max_line_bytes`` is skipped (counted
    ``oversized_line``) without being held in memory. The file truncated (``truncated``), or replaced by
    another (``replaced``: deleted and written anew, renamed over) is read from its start; a link or
    anything but a regular file in its place is not read (``refused_link``, ``not_regular_file``).
    :meth:`save` keeps the position in ``position_file``, which the next reader resumes from when the
    file is still the same one (same device, inode and first bytes).
    """

    def __init__(self, path: Path, position_file: Path, *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.path = Path(path)
        self.position_file = Path(position_file)
        self.max_line_bytes = max_line_bytes
        self.counts: Counter = Counter()
        self._fd: int | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the open file
        self._offset = 0
        self._skipping = False  # inside an oversized line: drop bytes up to its newline
        self._size: tuple[int, int] | None = None  # size and mtime last read: a poll reads when they change
        self._seen = ""  # digest of the file's head up to the position
        self._saved = self._load()
        self._refused: tuple[int, int] | None = None

    def _load(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.position_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        fields = {"path": str, "device": int, "inode": int, "offset": int, "skipping": bool, "head": str}
        if not isinstance(state, dict) or any(not isinstance(state.get(k), t) for k, t in fields.items()):
            return None
        return state if state["path"] == str(self.path) and state["offset"] >= 0 else None

    def _head(self, fd: int, length: int) -> str:
        return hashlib.sha256(os.pread(fd, min(length, HEAD_BYTES), 0)).hexdigest()

    def save(self) -> None:
        """Keep the position (call it once the lines read so far are stored)."""
        if self._fd is None or self._file is None:
            return
        state = {
            "path": str(self.path),
            "device": self._file[0],
            "inode": self._file[1],
            "offset": self._offset,
            "skipping": self._skipping,
            "head": self._head(self._fd, self._offset),
        }
        if state != self._saved:
            write_json(self.position_file, state)
            self._saved = state

    def lines(self) -> Iterator[bytes]:
        """Every complete line appended since the last call (without its newline)."""
        current = self._current()
        if self._fd is not None:
            yield from self._read()
            if current != self._file:  # replaced (or gone): what was written to the old file is read
                self._close()
                if current is not None:
                    self.counts["replaced"] += 1
        if self._fd is None and current is not None and self._open():
            yield from self._read()

    def _current(self) -> tuple[int, int] | None:
        """(device, inode) of the regular file at the path now; None when there is none to read."""
        try:
            found = os.lstat(self.path)
        except OSError:
            return None
        ident = (found.st_dev, found.st_ino)
        if not stat.S_ISREG(found.st_mode):
            if ident != self._refused:  # counted once for each thing planted there
                self._refused = ident
                self.counts["refused_link" if stat.S_ISLNK(found.st_mode) else "not_regular_file"] += 1
            return None
        return ident

    def _open(self) -> bool:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.path, flags)
        except OSError:  # gone, or made a link, since it was looked at
            return False
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            os.close(fd)
            return False
        self._fd, self._file = fd, (opened.st_dev, opened.st_ino)
        self._offset, self._skipping, self._size = 0, False, None
        saved, self._saved = self._saved, None
        if (
            saved is not None
            and (saved["device"], saved["inode"]) == self._file
            and saved["offset"] <= opened.st_size
            and self._head(fd, saved["offset"]) == saved["head"]
        ):
            self._offset, self._skipping = saved["offset"], saved["skipping"]
        self._seen = self._head(fd, self._offset)
        return True

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._file = None

    def _read(self) -> Iterator[bytes]:
        fd = self._fd
        assert fd is not None
        found = os.fstat(fd)
        size, version = found.st_size, (found.st_size, found.st_mtime_ns)
        if version == self._size:
            return
        if size < self._offset or (self._offset and self._head(fd, self._offset) != self._seen):
            self.counts["truncated"] += 1  # emptied (or rewritten) in place: read it anew
            self._offset, self._skipping = 0, False
        self._size = version
        try:
            while self._offset < size:
                data = os.pread(
                    fd, min(size - self._offset, max(READ_BYTES, self.max_line_bytes + 1)), self._offset
                )
                if not data:
                    return
                if self._skipping:
                    end = data.find(b"\n")
                    self._offset += len(data) if end < 0 else end + 1
                    self._skipping = end < 0
                    continue
                end = data.rfind(b"\n")
                if end < 0:
                    if len(data) > self.max_line_bytes:
                        self.counts["oversized_line"] += 1
                        self._offset += len(data)
                        self._skipping = True
                        continue
                    return  # a last line still being written: it waits for its newline
                self._offset += end + 1
                for line in data[:end].split(b"\n"):
                    if len(line) > self.max_line_bytes:
                        self.counts["oversized_line"] += 1
                        continue
                    yield line
        finally:
            self._seen = self._head(fd, self._offset)

    def close(self) -> None:
        self._close()
