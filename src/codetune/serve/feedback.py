"""What editors say about the suggestions they got: ``POST /v1/events`` (Tabby's plugins) and
``POST /v1/feedback`` (any other editor), both behind the API key when one is set.

The payloads are checked by ``codetune.feedback.events`` (one owner of their rules: Tabby's server
refuses what ``tabby_event`` refuses, with a 400 here) and kept by the server's recorder, which joins
them to the suggestion they name by id (``codetune.serve.recording``). An id the server never served
is counted, not an error: the editor gets the same answer either way.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from codetune.feedback.events import EventError, generic_feedback, tabby_event
from codetune.serve.protocols.base import EMPTY_ANSWER, Mount
from codetune.serve.responses import ServingError


class TabbyEvent(BaseModel):
    """tabby-agent's event body (Tabby's ``LogEventRequest``); other fields are ignored, as Tabby does."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "properties": {
                "type": {"enum": ["view", "select", "dismiss"]},
                "completion_id": {"type": "string"},
                "choice_index": {"type": "integer"},
                "view_id": {"type": "string"},
                "elapsed": {"type": "integer"},
                "select_kind": {"enum": ["line"]},
            },
            "required": ["type", "completion_id", "choice_index"],
        },
    )


class Feedback(BaseModel):
    """``{"id", "accepted", "kept_text"?, "index"?}``: what the developer did with suggestion ``id``."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "properties": {
                "id": {"type": "string"},
                "accepted": {"type": "boolean"},
                "kept_text": {"type": "string"},
                "index": {"type": "integer"},
            },
            "required": ["id", "accepted"],
        },
    )


FEEDBACK_ANSWER = {
    "type": "object",
    "properties": {"recorded": {"type": "boolean"}, "reason": {"type": "string"}},
}


def _checked(parse: Any, *args: Any) -> Any:
    try:
        return parse(*args)
    except EventError as error:
        raise ServingError(400, str(error), code="invalid_event") from None


def mount(ctx: Mount) -> None:
    @ctx.post("/v1/events", TabbyEvent, answer=EMPTY_ANSWER)
    async def events(request: Request, body: TabbyEvent) -> Any:
        record = _checked(tabby_event, body.model_dump(), dict(request.query_params))
        ctx.service.recorder.feedback(record)
        return Response(status_code=200)  # Tabby answers an empty body

    @ctx.post("/v1/feedback", Feedback, answer=FEEDBACK_ANSWER)
    async def feedback(request: Request, body: Feedback) -> Any:
        record = _checked(generic_feedback, body.model_dump())
        reason = ctx.service.recorder.feedback(record)
        return {"recorded": True} if reason is None else {"recorded": False, "reason": reason}
