"""What the server writes back besides a protocol's own JSON: errors in OpenAI's shape, SSE, NDJSON.

Every route answers an error as OpenAI does (``{"error": {message, type, param, code}}`` with the
HTTP status); a stream that fails after its first byte sends that same body as its last event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

# What each error status means on any route (the OpenAPI schema's descriptions).
ERROR_TEXT = {
    400: "Invalid request (OpenAI error body).",
    401: "Missing or wrong API key.",
    403: "Not allowed here (an admin route called from another machine without a key; swaps not enabled).",
    404: "No such model (the request's `model` names none of /v1/models).",
    408: "The request body did not arrive in time.",
    413: "Request body too large.",
    415: "Content-Type is not application/json.",
    500: "Internal error.",
    503: "Queue full; retry later.",
}
STREAM_TYPES = {"sse": "text/event-stream", "ndjson": "application/x-ndjson"}


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ServingError(Exception):
    """An error for the client: HTTP status + OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        error = ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=error).model_dump()


def error_response(error: ServingError) -> Any:
    """The error as a JSON response: ``Retry-After`` on 429/503, the connection closed after a 408."""
    from fastapi.responses import JSONResponse

    headers = {"Retry-After": "1"} if error.status in (429, 503) else {}
    if error.status == 408:
        headers["Connection"] = "close"  # the rest of the body is not worth waiting for
    return JSONResponse(error.body(), status_code=error.status, headers=headers or None)


def sse(events: AsyncIterator[dict[str, Any] | str], *, done: bool = False) -> Any:
    """Server-sent events, one ``data:`` line per event (a dict as JSON, a string as it is); ``done``
    ends with ``data: [DONE]``; a ServingError mid-stream is sent as its error body."""
    from fastapi.responses import StreamingResponse

    async def lines() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n"
            if done:
                yield "data: [DONE]\n\n"
        except ServingError as error:
            yield f"data: {json.dumps(error.body())}\n\n"

    return StreamingResponse(lines(), media_type=STREAM_TYPES["sse"], headers={"Cache-Control": "no-cache"})


def ndjson(events: AsyncIterator[dict[str, Any]]) -> Any:
    """One JSON object per line (Ollama's streaming); a ServingError mid-stream is its error body."""
    from fastapi.responses import StreamingResponse

    async def lines() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield json.dumps(event) + "\n"
        except ServingError as error:
            yield json.dumps(error.body()) + "\n"

    return StreamingResponse(lines(), media_type=STREAM_TYPES["ndjson"])
