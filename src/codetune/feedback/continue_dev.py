"""Continue's autocomplete dev data -> a records folder.

Continue writes one JSON line per autocomplete outcome to ``~/.continue/dev_data/0.2.0/autocomplete.jsonl``
(``0.1.0/`` in older versions): ``accepted`` is true when the developer took the suggestion, false
when it was shown and not taken within 10 seconds. Each line carries ``completionId``, ``prefix``,
``suffix``, ``completion``, ``prompt``, ``modelName``, ``modelProvider``, ``filepath`` (a URI),
``time`` (latency, ms), ``timestamp`` (ISO 8601), ``cacheHit``, ``userAgent`` and Continue's options.
Sources: docs/editors.md.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from codetune.artifacts.records import (
    MAX_ID_CHARS,
    CompletionRecord,
    FeedbackRecord,
    RecordWriter,
    parse_time,
    read_records,
)
from codetune.errors import InputError
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
