"""Editor feedback payloads -> :class:`FeedbackRecord`, as pure functions the server calls.

Tabby: tabby-agent posts ``{"type", "completion_id", "choice_index", "view_id"?, "elapsed"?}`` to
``POST /v1/events`` with ``select_kind=line`` in the query string for a partial accept (it puts the
same field in the body too); Tabby's server reads exactly these fields (``LogEventRequest``) and
answers 400 for a type other than view, select or dismiss. Sources: docs/editors.md.

Generic: ``{"id": str, "accepted": bool, "kept_text": str?, "index": int?}`` for any other editor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from codetune.artifacts.records import MAX_ID_CHARS, FeedbackRecord, utc_now
from codetune.errors import CodetuneError

# What a developer kept of a suggestion is at most a suggestion: a bound keeps hostile payloads small.
MAX_KEPT_CHARS = 1_000_000
TABBY_EVENTS = {"view": None, "select": True, "dismiss": False}
GENERIC_FIELDS = {"id", "accepted", "kept_text", "index"}


class EventError(CodetuneError):
    """A feedback payload that cannot be used (the server answers 400 with this message)."""


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise EventError(f"expected a JSON object, got {type(body).__name__}")
    return body


def _string(body: dict[str, Any], name: str, *, limit: int = MAX_ID_CHARS, required: bool = True) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise EventError(f"{name!r} must be a non-empty string")
    if len(value) > limit:
        raise EventError(f"{name!r} is longer than {limit} characters")
    return value


def _count(body: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise EventError(f"{name!r} must be an integer from 0 to 2^32-1")
    return value


def tabby_event(body: Any, query: Mapping[str, str] | None = None) -> FeedbackRecord:
    """The record of one tabby-agent event (``POST /v1/events``); EventError when Tabby would say 400.

    view -> accepted None (shown), select -> True, dismiss -> False. ``select_kind=line`` (query
    string, as Tabby's server reads it, or body, where tabby-agent also puts it) marks a partial
    accept: the records join keeps the suggestion's first line.
    """
    body = _object(body)  # other fields are ignored, as Tabby's server (serde, no deny_unknown_fields) does
    kind = body.get("type")
    if kind not in TABBY_EVENTS:
        raise EventError(f"'type' must be one of {', '.join(TABBY_EVENTS)}, not {kind!r}")
    completion_id = _string(body, "completion_id")
    index = _count(body, "choice_index", required=True)
    _string(body, "view_id", required=False)
    _count(body, "elapsed", required=False)
    select_kind = (query or {}).get("select_kind") or body.get("select_kind")
    if select_kind is not None and not isinstance(select_kind, str):
        raise EventError("'select_kind' must be a string")
    return FeedbackRecord(
        id=completion_id,
        index=int(index or 0),
        event=kind,
        accepted=TABBY_EVENTS[kind],
        # Tabby's server knows one kind, line (tabby-agent sends it for accept-word too).
        select_kind="line" if kind == "select" and select_kind == "line" else None,
        time=utc_now(),
        source="tabby",
    )


def generic_feedback(body: Any) -> FeedbackRecord:
    """The record of ``{"id", "accepted", "kept_text"?, "index"?}``; EventError for anything else."""
    body = _object(body)
    unknown = sorted(set(body) - GENERIC_FIELDS)
    if unknown:
        raise EventError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; expected id, accepted, kept_text"
        )
    ident = _string(body, "id")
    accepted = body.get("accepted")
    if not isinstance(accepted, bool):
        raise EventError("'accepted' must be true or false")
    kept = body.get("kept_text")
    if kept is not None and (not isinstance(kept, str) or len(kept) > MAX_KEPT_CHARS):
        raise EventError(f"'kept_text' must be a string of at most {MAX_KEPT_CHARS} characters")
    if kept is not None and not accepted:
        raise EventError("'kept_text' goes with an accepted suggestion (accepted: true)")
    index = _count(body, "index", required=False) or 0
    return FeedbackRecord(
        id=ident,
        index=index,
        event="accept" if accepted else "reject",
        accepted=accepted,
        kept_text=kept,
        time=utc_now(),
        source="generic",
    )
