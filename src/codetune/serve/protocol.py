"""Request and response models of the OpenAI-compatible API; requests convert to SamplingParams.

Requests are strict (``postprocess: 0`` or ``"top_logprobs": "3"`` are 400s, not coerced) and
bounded, so that no value can fail a batch or stall the engine:

* ``seed`` within uint64 (0 .. 2**64 - 1), what torch's generators accept;
* ``temperature`` 0 (greedy) or within [0.01, 2]: below 0.01 the logits overflow to inf;
* ``repetition_penalty`` within [0.05, 20] (1 = off), ``top_k`` at most 100,000;
* ``stop``: at most 16 strings of at most 256 characters (OpenAI allows 4);
* ``truncate_before_pattern``: at most 8 regular expressions of at most 256 characters each;
* no float may be NaN or infinite, and no string may hold a lone surrogate (it cannot be encoded).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from codetune.generation.params import (
    MAX_PATTERN_CHARS,
    MAX_PATTERNS,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOPS,
    MIN_TEMPERATURE,
    SamplingParams,
)

Stop = Annotated[str, Field(max_length=MAX_STOP_CHARS)]
Pattern = Annotated[str, Field(max_length=MAX_PATTERN_CHARS)]


def _reject_surrogates(value: Any, where: str = "body") -> None:
    """Raise ValueError for a string (anywhere in the JSON) holding a lone UTF-16 surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: lone surrogate in a string (not valid Unicode)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_surrogates(key, where)
            _reject_surrogates(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _reject_surrogates(item, where)


class OpenAIModel(BaseModel):
    # Editors send extra fields (Copilot's `extra`, `nwo`, ...): accepted and ignored.
    model_config = ConfigDict(extra="allow", protected_namespaces=(), strict=True)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        _reject_surrogates(data)
        return data


def _finite(default: float | None, **bounds: float) -> Any:
    return Field(default, allow_inf_nan=False, **bounds)


class _Sampling(OpenAIModel):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=0)
    temperature: float | None = _finite(None, ge=0, le=2)
    top_p: float | None = _finite(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    user: str | None = None
    presence_penalty: float = _finite(0.0, ge=-2, le=2)
    frequency_penalty: float = _finite(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    # codetune extensions (CodeGen's decode parameters)
    top_k: int = Field(0, ge=0, le=100_000)
    repetition_penalty: float = _finite(1.0, ge=0.05, le=20)
    min_tokens: int = Field(0, ge=0, le=100_000)
    truncate_before_pattern: Annotated[list[Pattern], Field(max_length=MAX_PATTERNS)] | None = None

    @field_validator("temperature")
    @classmethod
    def _usable_temperature(cls, value: float | None) -> float | None:
        if value is not None and 0 < value < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE}")
        return value

    @field_validator("truncate_before_pattern")
    @classmethod
    def _compiles(cls, patterns: list[str] | None) -> list[str] | None:
        for pattern in patterns or []:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"bad regular expression {pattern!r}: {error}") from None
        return patterns

    def sequence_count(self) -> int:
        """How many sequences this request queues."""
        return self.n

    def to_sampling_params(
        self, default_max_tokens: int, extra_stop: list[str] | None = None
    ) -> SamplingParams:
        """The engine settings this request asks for."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            max_new_tokens=default_max_tokens if self.max_tokens is None else self.max_tokens,
            min_new_tokens=self.min_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            stop=[s for s in stop + (extra_stop or []) if s],
            seed=self.seed,
            n=self.n,
            truncate_before_pattern=list(self.truncate_before_pattern or []),
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logprobs=getattr(self, "logprobs", None)
            if isinstance(getattr(self, "logprobs", None), int)
            else None,
        )


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
    logprobs: int | None = Field(None, ge=0, le=5)
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
    top_logprobs: int | None = Field(None, ge=0, le=20)


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


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
