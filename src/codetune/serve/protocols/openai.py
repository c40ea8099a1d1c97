"""OpenAI: ``POST /v1/completions`` and ``/v1/chat/completions`` (JSON or SSE), ``GET /v1/models``, and
the server's ``GET /health``.

Request and response models follow OpenAI's API (and the ``openai`` client library); requests convert
to ``SamplingParams`` and are bounded by its one set of limits (``codetune.generation.params``), so
that no value can fail a batch or stall the engine. Requests are strict (``postprocess: 0`` or
``"top_logprobs": "3"`` are 400s, not coerced); no float may be NaN or infinite, and no string may hold
a lone surrogate (the server's JSON rules, ``codetune.serve.http``, hold on every route). codetune's extensions: ``suffix`` for fill-in-the-middle with
``postprocess``, CodeGen's ``top_k``, ``repetition_penalty``, ``min_tokens`` and
``truncate_before_pattern``, ``filepath`` (context from its ``--repo`` repository) and Tabby's
``debug_options``. Usage adds what of each prompt was kept.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from codetune.generation.params import (
    MAX_LOGPROBS,
    MAX_N,
    MAX_PATTERN_CHARS,
    MAX_PATTERNS,
    MAX_PENALTY,
    MAX_REPETITION_PENALTY,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOPS,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    MIN_REPETITION_PENALTY,
    MIN_TEMPERATURE,
)
from codetune.generation.request import GenerationRequest
from codetune.generation.sequence import Sequence
from codetune.serve.protocols.base import Mount, register_protocol
from codetune.serve.repos import EditorContext
from codetune.serve.responses import ServingError, sse
from codetune.serve.service import Generation

Stop = Annotated[str, Field(max_length=MAX_STOP_CHARS)]
Pattern = Annotated[str, Field(max_length=MAX_PATTERN_CHARS)]


class OpenAIModel(BaseModel):
    # Editors send extra fields (Copilot's `extra`, `nwo`, ...): accepted and ignored.
    model_config = ConfigDict(extra="allow", protected_namespaces=(), strict=True)


def _finite(default: float | None, **bounds: float) -> Any:
    return Field(default, allow_inf_nan=False, **bounds)


class _Sampling(OpenAIModel):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=0)
    temperature: float | None = _finite(None, ge=0, le=MAX_TEMPERATURE)
    top_p: float | None = _finite(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    user: str | None = None
    presence_penalty: float = _finite(0.0, ge=-MAX_PENALTY, le=MAX_PENALTY)
    frequency_penalty: float = _finite(0.0, ge=-MAX_PENALTY, le=MAX_PENALTY)
    logit_bias: dict[str, float] | None = None
    # codetune extensions (CodeGen's decode parameters)
    top_k: int = Field(0, ge=0, le=MAX_TOP_K)
    repetition_penalty: float = _finite(1.0, ge=MIN_REPETITION_PENALTY, le=MAX_REPETITION_PENALTY)
    min_tokens: int = Field(0, ge=0)
    truncate_before_pattern: Annotated[list[Pattern], Field(max_length=MAX_PATTERNS)] | None = None

    @field_validator("temperature")
    @classmethod
    def _usable_temperature(cls, value: float | None) -> float | None:
        if value is not None and 0 < value < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE}")
        return value

    def sequence_count(self) -> int:
        """How many sequences this request queues."""
        return self.n

    def settings(self) -> dict[str, Any]:
        """The ``SamplingParams`` this request asks for (``max_tokens``: the server's default when None)."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        logprobs = getattr(self, "logprobs", None)
        return {
            "max_tokens": self.max_tokens,
            "min_new_tokens": self.min_tokens,
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "stop": [s for s in stop if s],
            "seed": self.seed,
            "n": self.n,
            "truncate_before_pattern": list(self.truncate_before_pattern or []),
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            # chat's `logprobs` is a flag, not a count
            "logprobs": logprobs if isinstance(logprobs, int) and not isinstance(logprobs, bool) else None,
        }

    def refuse_unsupported(self) -> None:
        if self.logit_bias:
            raise ServingError(400, "logit_bias is not supported", param="logit_bias")
        if getattr(self, "best_of", None) not in (None, self.n):
            raise ServingError(400, "best_of is not supported (use n)", param="best_of")


class DebugOptions(OpenAIModel):
    """Tabby's ``debug_options`` (also a codetune extension of /v1/completions): what to send back."""

    return_snippets: bool = False
    return_prompt: bool = False
    disable_retrieval_augmented_code_completion: bool = False


class CompletionRequest(_Sampling):
    """POST /v1/completions (and Copilot's /v1/engines/{engine}/completions)."""

    prompt: str | list[str] | list[int] | list[list[int]] = ""
    suffix: str | None = None
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)  # OpenAI's own bound for completions
    best_of: int | None = Field(None, ge=1)
    postprocess: bool | None = None
    # codetune extensions: the file being completed (context from its `--repo` repository), and
    # Tabby's debug options (`debug_data` in the answer: the context snippets and the prompt).
    filepath: str | None = Field(None, max_length=4096)
    debug_options: DebugOptions | None = None

    def sequence_count(self) -> int:
        prompts = self.prompt
        many = isinstance(prompts, list) and prompts and not isinstance(prompts[0], int)
        return self.n * (len(prompts) if many else 1)


class ChatMessage(OpenAIModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = ""

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content)
        return self.content or ""


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length", "cancelled"] | None = None


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: _id("cmpl"))
    object: str = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatMessageOut(BaseModel):
    role: str = "assistant"
    content: str = ""


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: Literal["stop", "length", "cancelled"] | None = None
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: _id("chatcmpl"))
    object: str = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: str | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: Literal["stop", "length", "cancelled"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: str = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "codetune"
    # An adapter's card: its folder and the base it runs over (vLLM's LoRA cards).
    root: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


# -- conversion ---------------------------------------------------------------------------------
def _language(body: CompletionRequest) -> str | None:
    """The language an editor names (``language``, or Copilot's ``extra.language``), if any."""
    extra = getattr(body, "extra", None)
    if isinstance(extra, BaseModel):
        extra = extra.model_dump()
    value = getattr(body, "language", None) or (extra.get("language") if isinstance(extra, dict) else None)
    return value if isinstance(value, str) and len(value) < 40 else None


def _nwo(body: CompletionRequest) -> str | None:
    """The repository Copilot names, ``nwo`` ("name with owner": ``owner/name``), if any.

    Copilot-compatible completion APIs carry it beside ``extra`` (e.g. KittyCAD/kittycad.py,
    kittycad/models/kcl_code_completion_request.py: ``nwo``, ``extra: {language, next_indent,
    trim_by_indentation, prompt_tokens, suffix_tokens}``, ``prompt``, ``suffix``).
    """
    value = getattr(body, "nwo", None)
    return value if isinstance(value, str) and 0 < len(value) < 300 else None


def _annotate(answer: dict[str, Any], generation: Generation) -> dict[str, Any]:
    """Add what was kept of each prompt to ``usage``, and any warning."""
    if answer.get("usage") is not None:
        details = [built.usage_details() for built in generation.prepared]
        for key in (
            "prompt_tokens_sent",
            "prompt_tokens_kept",
            "prefix_tokens_dropped",
            "suffix_tokens_dropped",
        ):
            answer["usage"][key] = sum(d[key] for d in details)
        answer["usage"]["truncated"] = any(d["truncated"] for d in details)
        for key in ("context_snippets_kept", "context_snippets_dropped"):
            if any(key in d for d in details):
                answer["usage"][key] = sum(d.get(key, 0) for d in details)
    if generation.warning:
        answer["warning"] = generation.warning
    return answer


def _reason(seq: Sequence) -> str:
    # "cancelled": a newer request of the same `user` took over (the text is what was ready)
    return seq.finish_reason if seq.finish_reason in ("length", "cancelled") else "stop"


def _usage(generation: Generation) -> Usage:
    seqs = generation.sequences
    prompt = sum(len(built.prompt_ids) for built in generation.prepared)
    completion = sum(len(s.tokens) for s in seqs)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _logprobs(tokenizer: Any, seq: Sequence, offset: int) -> CompletionLogprobs | None:
    if seq.params.logprobs is None:
        return None
    tokens = [tokenizer.decode([t]) for t in seq.tokens]
    offsets, position = [], offset
    for token in tokens:
        offsets.append(position)
        position += len(token)
    return CompletionLogprobs(
        tokens=tokens,
        token_logprobs=seq.token_logprobs,
        top_logprobs=seq.top_logprobs if seq.params.logprobs else None,
        text_offset=offsets,
    )


# -- completions --------------------------------------------------------------------------------
async def complete(ctx: Mount, request: Request, body: CompletionRequest) -> Any:
    """A completion answer (JSON, or SSE when ``stream``); Copilot's route answers with it too."""
    service = ctx.service
    body.refuse_unsupported()
    params = service.sampling(**body.settings())
    prompts = body.prompt
    if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
        prompts = [prompts]
    postprocess = service.cfg.postprocess if body.postprocess is None else body.postprocess
    language = _language(body)
    debug = body.debug_options
    retrieve = not (debug and debug.disable_retrieval_augmented_code_completion)
    editor = EditorContext(filepath=body.filepath, repo=_nwo(body), retrieve=retrieve)
    requests = [
        GenerationRequest(prompt, body.suffix, params=params, language=language, postprocess=postprocess)
        for prompt in prompts or [""]
    ]
    generation = await service.generate(
        requests,
        model=body.model,
        client=f"completions:{body.user}" if body.user else None,
        caller=ctx.guard.caller(request),
        editor=editor,
        disconnected=request.is_disconnected,
        stream=body.stream,
    )
    texts = [built.text for built in generation.prepared for _ in built.sequences]
    if body.stream:
        return sse(_completion_chunks(ctx, body, generation, texts), done=True)
    await generation.wait()
    choices = []
    for i, (seq, text) in enumerate(zip(generation.sequences, texts)):
        prefix = text if body.echo else ""
        choices.append(
            CompletionChoice(
                text=prefix + seq.text,
                index=i,
                logprobs=_logprobs(service.tokenizer, seq, len(prefix)),
                finish_reason=_reason(seq),
            )
        )
    answer = CompletionResponse(
        id=generation.id, model=generation.model, choices=choices, usage=_usage(generation)
    )
    data = answer.model_dump(exclude_none=False)
    if debug is not None:
        data["debug_data"] = generation.debug_data(snippets=debug.return_snippets, prompt=debug.return_prompt)
    return JSONResponse(_annotate(data, generation))


async def _completion_chunks(
    ctx: Mount, body: CompletionRequest, generation: Generation, texts: list[str]
) -> AsyncIterator[dict[str, Any]]:
    response_id = generation.id
    created = int(time.time())
    first = {"warning": generation.warning} if generation.warning else {}
    if body.debug_options is not None:
        debug = body.debug_options
        first["debug_data"] = generation.debug_data(
            snippets=debug.return_snippets, prompt=debug.return_prompt
        )

    def chunk(index: int, text: str, reason: str | None) -> dict[str, Any]:
        nonlocal first
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": reason}
        answer = {
            "id": response_id,
            "object": "text_completion",
            "created": created,
            "model": generation.model,
            "choices": [choice],
            **first,
        }
        first = {}
        return answer

    if body.echo:
        for i, text in enumerate(texts):
            yield chunk(i, text, None)
    async for row, delta in generation.events():
        if delta is None:
            yield chunk(row, "", _reason(generation.sequences[row]))
        elif delta:
            yield chunk(row, delta, None)
    if (body.stream_options or {}).get("include_usage"):
        usage = {
            "id": response_id,
            "object": "text_completion",
            "created": created,
            "model": generation.model,
            "choices": [],
            "usage": _usage(generation).model_dump(),
        }
        yield _annotate(usage, generation)


# -- chat ---------------------------------------------------------------------------------------
async def chat(ctx: Mount, request: Request, body: ChatCompletionRequest) -> Any:
    """A chat answer (the tokenizer's chat template, else a plain one), JSON or SSE."""
    service = ctx.service
    body.refuse_unsupported()
    params = service.sampling(**body.settings())
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    generation = await service.generate(
        [GenerationRequest(messages=messages, params=params)],
        model=body.model,
        client=f"chat:{body.user}" if body.user else None,
        caller=ctx.guard.caller(request),
        disconnected=request.is_disconnected,
        stream=body.stream,
        response_id=_id("chatcmpl"),
    )
    seqs = generation.sequences
    if body.stream:
        return sse(_chat_chunks(generation), done=True)
    await generation.wait()
    choices = [
        ChatChoice(index=i, message=ChatMessageOut(content=s.text), finish_reason=_reason(s))
        for i, s in enumerate(seqs)
    ]
    answer = ChatCompletionResponse(
        id=generation.id, model=generation.model, choices=choices, usage=_usage(generation)
    )
    return JSONResponse(_annotate(answer.model_dump(), generation))


async def _chat_chunks(generation: Generation) -> AsyncIterator[str]:
    response_id = generation.id

    def chunk(index: int, delta: ChatDelta, reason: str | None = None) -> str:
        body = ChatCompletionChunk(
            id=response_id,
            model=generation.model,
            choices=[ChatChunkChoice(index=index, delta=delta, finish_reason=reason)],
        )
        return body.model_dump_json(exclude_none=True)

    for i in range(len(generation.sequences)):
        yield chunk(i, ChatDelta(role="assistant", content=""))
    async for row, delta in generation.events():
        if delta is None:
            yield chunk(row, ChatDelta(), _reason(generation.sequences[row]))
        elif delta:
            yield chunk(row, ChatDelta(content=delta))


@register_protocol(
    "openai",
    clients="openai Python/JS SDKs, Continue, any OpenAI-compatible client",
    example=("/v1/completions", {"prompt": "def add(a, b):\n    return", "max_tokens": 4, "temperature": 0}),
)
def mount(ctx: Mount) -> None:
    @ctx.post("/v1/completions", CompletionRequest, stream="sse", answer=CompletionResponse)
    async def completions(request: Request, body: CompletionRequest) -> Any:
        return await complete(ctx, request, body)

    @ctx.post("/v1/chat/completions", ChatCompletionRequest, stream="sse", answer=ChatCompletionResponse)
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Any:
        return await chat(ctx, request, body)

    @ctx.get("/v1/models", answer=ModelList)
    async def models(request: Request) -> Any:
        service = ctx.service
        cards = [ModelCard(id=service.name)]
        cards += [
            ModelCard(id=name, root=service.table.folders.get(name), parent=service.name)
            for name in service.adapters
        ]
        return ModelList(data=cards).model_dump()

    @ctx.get("/health", guarded=False)
    async def health(request: Request) -> Any:
        # Liveness is public (load balancers, editors' checks); the model and counters need the key.
        return ctx.service.health(details=ctx.guard.has_key(request))
