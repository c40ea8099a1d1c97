"""How the server reads a request before any protocol sees it: the guards every route shares.

The API key (401), JSON bodies only (415, so that a web page cannot post a "simple" cross-site
request), a body size (413) and a deadline for the whole body (408, against slow clients), JSON too
deep to parse or not matching the route's model (400, naming the field), and no request that asks
for more sequences than the queue can ever hold (400).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import sys
from dataclasses import dataclass
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


MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4300  # Python's own limit on int("...")


class _NotJson(ValueError):
    """A number JSON has no room for (NaN, Infinity, a float overflowing, an integer too long)."""


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _NotJson(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJson(f"the number {text[:40]} is too large for a float")
    return value


def _json_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON (numbers must be finite)")


def _reject_surrogates(value: Any, where: str = "body") -> None:
    """A 400 for a string (key or value, anywhere in the body) holding a lone UTF-16 surrogate: it
    cannot be encoded, so no tokenizer, log or answer could take it."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ServingError(
                    400,
                    f"{path}: lone surrogate in a string (not valid Unicode)",
                    param=path,
                    code="invalid_value",
                ) from None
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, path))
                stack.append((child, f"{path}.{key}" if path != "body" else key))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))


def loads(body: bytes) -> Any:
    """A JSON body as the standard has it (see the module's docstring), or a 400."""
    try:
        data = json.loads(
            body or b"null", parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant
        )
    except _NotJson as error:
        raise ServingError(400, f"malformed JSON body: {error}", code="invalid_json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ServingError(400, f"malformed JSON body: {error}", code="invalid_json") from None
    except RecursionError:
        raise ServingError(400, "malformed JSON body: nested too deeply", code="invalid_json") from None
    _reject_surrogates(data)
    return data


def parse(model_cls: type[BaseModel], body: bytes) -> Any:
    """Parse a JSON body into a request model, or raise a 400."""
    data = loads(body)
    if not isinstance(data, dict):
        raise ServingError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return model_cls.model_validate(data)
    except ValidationError as error:
        raise validation_error(error) from None
    except RecursionError:
        raise ServingError(400, "malformed JSON body: nested too deeply", code="invalid_json") from None


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as far as the server can tell: the peer's address and the API key it gave
    (a digest, never the key). Clients behind one address share one share of the server."""

    address: str
    key: str = ""


def _token(request: Any) -> str:
    given = request.headers.get("authorization", "")
    return given[7:] if given.lower().startswith("bearer ") else request.headers.get("x-api-key", "")


class Guard:
    """The server's checks on every request, from its config."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg

    def has_key(self, request: Any) -> bool:
        """Whether the request may see what the key guards (always, when no key is set)."""
        if not self.cfg.api_key:
            return True
        return hmac.compare_digest(_token(request).encode(), self.cfg.api_key.encode())

    def check_key(self, request: Any) -> None:
        """401 without the key (when one is set)."""
        if not self.has_key(request):
            raise ServingError(401, "missing or wrong API key", code="invalid_api_key")

    @staticmethod
    def caller(request: Any) -> Caller:
        """Who sent ``request`` (see :class:`Caller`)."""
        token = _token(request)
        key = hashlib.sha256(token.encode()).hexdigest()[:16] if token else ""
        return Caller(request.client.host if request.client else "", key)

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


def header_timeout_protocol(timeout_s: float) -> type:
    """uvicorn's HTTP/1.1 protocol (h11) that closes a connection, with a 408, when a request's
    headers are not all there ``timeout_s`` after it opened or after its previous answer: uvicorn
    itself waits for headers forever, so slow clients could hold every connection the server has."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # the headers are in
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request's headers get their own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_deadline = self.loop.call_later(timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _too_slow(self) -> None:
            self._header_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                self.transport.close()

    return HeaderTimeoutProtocol
