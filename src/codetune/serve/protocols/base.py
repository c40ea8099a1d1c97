"""The one seam between editor protocols and the engine.

Every protocol adapter turns its own request body into an :class:`EditorRequest`, asks the
:class:`Engine` for a completion (or a stream of text), and writes the answer in its own shape.
Only this module knows how the serving object generates, so a new engine changes this file alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

Disconnected = Callable[[], Awaitable[bool]]
BodyReader = Callable[[Any], Awaitable[bytes]]
Guard = Callable[[Any], None]
# The OpenAI routes' reader: body checks, parse, and the bound on sequences per request.
RequestReader = Callable[..., Awaitable[Any]]


class ProtocolModel(BaseModel):
    """A request body of one editor protocol: unknown fields are a 400, as the docs list them all."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


@dataclass
class EditorRequest:
    """What every protocol asks of the engine: a FIM or plain prompt and its sampling settings."""

    prompt: str
    suffix: str | None = None
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    model: str | None = None
    # The editor's language name (Tabby's `language`): post-processing parses the completion in it.
    language: str | None = None
    # A newer request with the same client id cancels the older one still running (keystrokes).
    client: str | None = None
    # llama.cpp's budgets: stop at the first token once prompt processing took longer than this,
    # and stop after a newline once generating took longer than that.
    max_prompt_ms: float | None = None
    max_predict_ms: float | None = None
    # The file being completed and the context the editor sent (see serve/repos.py).
    filepath: str | None = None
    context: Any = None  # an EditorContext
    debug_options: Any = None  # a protocol.DebugOptions
    # llama.cpp's cache_prompt: false keeps this prompt out of the prefix cache (no reuse, no store).
    cache_prompt: bool = True


@dataclass
class EditorCompletion:
    """The engine's answer, with what the protocols report about it."""

    text: str
    finish_reason: str  # "stop", "length" or "cancelled"
    prompt_tokens: int
    completion_tokens: int
    model: str
    prompt_ms: float
    predict_ms: float
    # Set when the prompt was trimmed to the context, or a suffix was dropped (a model without FIM).
    truncated: bool = False
    warning: str | None = None
    # Tabby's debug_data (context snippets, prompt) when the request asked for it.
    debug_data: dict[str, Any] | None = None
    cached_tokens: int = 0  # prompt tokens whose KV the prefix cache supplied


class Engine:
    """A tiny interface over the serving object: complete, stream, model names."""

    def __init__(self, serving: Any) -> None:
        self.serving = serving

    @property
    def name(self) -> str:
        return self.serving.name

    @property
    def context_length(self) -> int:
        return self.serving.context

    def model_names(self) -> list[str]:
        """The base's served name, then each named adapter's."""
        return self.serving.model_names()

    def check_model(self, name: str | None) -> str | None:
        """The adapter ``name`` picks (None: the base); a 404 naming the served models otherwise."""
        return self.serving.adapter_for(name)

    def device(self) -> str:
        return str(getattr(self.serving.model, "device", "cpu"))

    def _sequences(self, request: EditorRequest) -> Any:
        """The built request (its sequences, whether its prompt was trimmed, any warning)."""
        from pydantic import ValidationError

        from codetune.serve.protocol import CompletionRequest
        from codetune.serve.serving import validation_error

        try:
            openai_request = CompletionRequest(
                model=request.model,
                prompt=request.prompt,
                suffix=request.suffix,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                top_k=request.top_k,
                stop=request.stop or None,
                seed=request.seed,
                presence_penalty=request.presence_penalty,
                frequency_penalty=request.frequency_penalty,
                repetition_penalty=request.repetition_penalty,
                min_tokens=request.min_tokens,
                **({"language": request.language} if request.language else {}),
                filepath=request.filepath,
            )
        except ValidationError as error:
            raise validation_error(error) from None
        [built] = self.serving._completion_requests(openai_request, request.context)
        built.new_sequences()
        return built

    async def stream(
        self, request: EditorRequest, disconnected: Disconnected | None = None
    ) -> AsyncIterator[str | EditorCompletion]:
        """Text deltas, then one EditorCompletion. Queueing errors are raised before the first item."""
        from codetune.serve.serving import _chain, _first

        await self.serving.refresh_repos()
        built = self._sequences(request)
        seqs, truncated, warning = built.sequences, built.truncated, built.warning
        debug = self.serving.debug_data(built, request.debug_options) if request.debug_options else None
        self.serving.use_adapter(seqs, request.model)
        for seq in seqs:
            seq.prefix_cache = request.cache_prompt
        [seq] = seqs
        started = time.monotonic()
        run = self.serving._run(seqs, disconnected, stream=True, client=request.client)
        first = await _first(run)

        async def events() -> AsyncIterator[str | EditorCompletion]:
            first_token_at: float | None = None
            text = ""
            try:
                pending = [first] if first is not None else []
                async for kind, _, delta in _chain(pending, run):
                    if kind == "done":
                        break
                    now = time.monotonic()
                    if first_token_at is None:
                        first_token_at = now
                        if (
                            request.max_prompt_ms is not None
                            and (now - started) * 1000 > request.max_prompt_ms
                        ):
                            seq.cancel()
                    text += delta
                    if delta:
                        yield delta
                    if (
                        request.max_predict_ms is not None
                        and (now - first_token_at) * 1000 > request.max_predict_ms
                        and "\n" in text
                    ):
                        seq.cancel()
                        break
                finished = time.monotonic()
                first_token_at = first_token_at or finished
                yield EditorCompletion(
                    text=text,
                    finish_reason=seq.finish_reason or "cancelled",
                    prompt_tokens=len(seq.prompt_ids),
                    completion_tokens=len(seq.tokens),
                    model=request.model or self.name,
                    prompt_ms=(first_token_at - started) * 1000,
                    predict_ms=(finished - first_token_at) * 1000,
                    truncated=truncated,
                    warning=warning,
                    debug_data=debug,
                    cached_tokens=seq.cached_tokens,
                )
            finally:
                await run.aclose()

        return events()

    async def complete(
        self, request: EditorRequest, disconnected: Disconnected | None = None
    ) -> EditorCompletion:
        """The whole completion at once."""
        result = None
        async for item in await self.stream(request, disconnected):
            if isinstance(item, EditorCompletion):
                result = item
        assert result is not None
        return result


POST_ERRORS = (400, 401, 404, 408, 413, 415, 500, 503)
GET_ERRORS = (401, 500)
STREAM_TYPES = {"sse": "text/event-stream", "ndjson": "application/x-ndjson"}


def declared_responses(
    codes: tuple[int, ...], stream: str | None = None, answer: dict[str, Any] | None = None
) -> dict[int | str, Any]:
    """OpenAPI responses of a route: errors in OpenAI's shape, the answer's schema, the stream's media type."""
    from codetune.serve.protocol import ErrorResponse

    responses: dict[int | str, Any] = {
        code: {"model": ErrorResponse, "description": "error"} for code in codes
    }
    ok: dict[str, Any] = {
        "description": "OK",
        "content": {"application/json": {"schema": answer or {"type": "object"}}},
    }
    if stream == "sse":
        event = {"type": "object", "properties": {"data": {"type": "string"}, "event": {"type": "string"}}}
        ok["content"][STREAM_TYPES[stream]] = {"schema": event}
    elif stream is not None:
        ok["content"][STREAM_TYPES[stream]] = {"schema": {"type": "string"}}
    responses[200] = ok
    return responses


@dataclass
class Mount:
    """What an adapter needs to add its routes: the app, the engine and the server's body checks.

    ``bodies`` collects each POST route's request model, for the server's OpenAPI schema.
    """

    app: Any
    engine: Engine
    read_body: BodyReader
    guard: Guard
    read_request: RequestReader
    bodies: dict[str, type[BaseModel]] = field(default_factory=dict)

    def post(
        self,
        path: str,
        body: type[BaseModel],
        stream: str | None = None,
        answer: dict[str, Any] | None = None,
    ) -> Callable[[Any], Any]:
        """Route decorator: a POST whose JSON body is ``body``, streaming as ``stream`` (sse, ndjson);
        ``answer`` is the JSON schema of a whole answer (an object unless given)."""
        self.bodies[path] = body
        return self.app.post(path, responses=declared_responses(POST_ERRORS, stream, answer))

    def get(self, path: str) -> Callable[[Any], Any]:
        return self.app.get(path, responses=declared_responses(GET_ERRORS))

    async def parse(self, model_cls: type[BaseModel], request: Any) -> Any:
        """The request body parsed into ``model_cls``, or a 400 naming the bad field."""
        return self.parse_body(model_cls, await self.read_body(request))

    @staticmethod
    def parse_body(model_cls: type[BaseModel], body: bytes) -> Any:
        from codetune.serve.serving import ServingError, parse

        try:
            return parse(model_cls, body)
        except RecursionError:
            raise ServingError(400, "malformed JSON body: nested too deeply", code="invalid_json") from None


@dataclass(frozen=True)
class Protocol:
    name: str
    mount: Callable[[Mount], None]
    clients: str


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(
    name: str, clients: str
) -> Callable[[Callable[[Mount], None]], Callable[[Mount], None]]:
    """Decorator: ``mount(ctx)`` adds the protocol's routes to ``ctx.app``."""

    def add(mount: Callable[[Mount], None]) -> Callable[[Mount], None]:
        if name in PROTOCOLS:
            raise ValueError(f"protocol {name!r} registered twice")
        PROTOCOLS[name] = Protocol(name, mount, clients)
        return mount

    return add


def mount_protocols(
    app: Any, serving: Any, read_body: BodyReader, guard: Guard, read_request: RequestReader
) -> dict[str, type[BaseModel]]:
    """Add every registered protocol's routes to ``app``; returns each POST path's body model."""
    import codetune.serve.protocols  # noqa: F401  (registers the adapters)

    ctx = Mount(app, Engine(serving), read_body, guard, read_request)
    for protocol in PROTOCOLS.values():
        protocol.mount(ctx)
    return ctx.bodies


# -- response helpers ---------------------------------------------------------------------------
def sse(events: AsyncIterator[dict[str, Any]], *, done: bool = False) -> Any:
    """Server-sent events, one ``data:`` line per dict; ``done`` ends with ``data: [DONE]``."""
    from fastapi.responses import StreamingResponse

    async def lines() -> AsyncIterator[str]:
        async for event in events:
            yield f"data: {json.dumps(event)}\n\n"
        if done:
            yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def respond(result: dict[str, Any] | AsyncIterator[str]) -> Any:
    """A serving result as JSON, or as SSE when it is an iterator of ready ``data:`` lines."""
    from fastapi.responses import JSONResponse, StreamingResponse

    if isinstance(result, dict):
        return JSONResponse(result)
    return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def ndjson(events: AsyncIterator[dict[str, Any]]) -> Any:
    """One JSON object per line (Ollama's streaming)."""
    from fastapi.responses import StreamingResponse

    async def lines() -> AsyncIterator[str]:
        async for event in events:
            yield json.dumps(event) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def one_of(value: str | list[str] | None) -> list[str]:
    """A stop field given as one string or a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
