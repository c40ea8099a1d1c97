"""How the server reads a request before any protocol sees it: the guards every route shares.

The API key (401), JSON bodies only (415, so that a web page cannot post a "simple" cross-site
request), a body size (413) and a deadline for the whole body (408, against slow clients), JSON too
deep to parse or not matching the route's model (400, naming the field), and no request that asks
for more sequences than the queue can ever hold (400).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from pydantic import BaseModel, ValidationError

from codetune.serve.config import ServeConfig
from codetune.serve.responses import ServingError


def validation_error(error: ValidationError) -> ServingError:
    """A 400 naming the first bad field."""
    first = error.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    messages = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()[:5]
    )
    return ServingError(400, messages, param=param, code="invalid_value")


def parse(model_cls: type[BaseModel], body: bytes) -> Any:
    """Parse a JSON body into a request model, or raise a 400."""
    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ServingError(400, f"malformed JSON body: {error}", code="invalid_json") from None
    except RecursionError:
        raise ServingError(400, "malformed JSON body: nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ServingError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return model_cls.model_validate(data)
    except ValidationError as error:
        raise validation_error(error) from None
    except RecursionError:
        raise ServingError(400, "malformed JSON body: nested too deeply", code="invalid_json") from None


class Guard:
    """The server's checks on every request, from its config."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg

    def check_key(self, request: Any) -> None:
        """401 without the key (when one is set)."""
        if self.cfg.api_key:
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
            if not hmac.compare_digest(token.encode(), self.cfg.api_key.encode()):
                raise ServingError(401, "missing or wrong API key", code="invalid_api_key")

    async def read_body(self, request: Any) -> bytes:
        """The key checked, then the body: JSON only (415), within max_body_bytes (413), all of it
        within body_timeout_s (408)."""
        cfg = self.cfg
        self.check_key(request)
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise ServingError(
                415,
                f"Content-Type must be application/json, not {media_type or 'missing'}",
                code="unsupported_media_type",
            )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_body_bytes:
            raise ServingError(413, f"request body over {cfg.max_body_bytes} bytes", code="body_too_large")

        async def receive() -> bytes:
            parts, size = [], 0
            async for part in request.stream():
                parts.append(part)
                size += len(part)
                if size > cfg.max_body_bytes:
                    raise ServingError(
                        413, f"request body over {cfg.max_body_bytes} bytes", code="body_too_large"
                    )
            return b"".join(parts)

        try:
            return await asyncio.wait_for(receive(), timeout=cfg.body_timeout_s)
        except asyncio.TimeoutError:
            raise ServingError(
                408, f"request body not received within {cfg.body_timeout_s:g} s", code="body_timeout"
            ) from None

    def parse(self, model_cls: type[BaseModel], body: bytes) -> Any:
        """The body as ``model_cls`` (400 naming the bad field), within the queue's sequence bound."""
        parsed = parse(model_cls, body)
        count = parsed.sequence_count() if hasattr(parsed, "sequence_count") else 1
        if count > self.cfg.max_queue:
            raise ServingError(
                400,
                f"this request asks for {count} sequences (n x prompts); "
                f"this server queues at most {self.cfg.max_queue}",
                param="n",
                code="too_many_sequences",
            )
        return parsed
