"""Mistral / Codestral FIM: ``POST /v1/fim/completions``, answered in the chat-completion shape.

Fields: mistralai/client-python ``FIMCompletionRequest`` (model, prompt, suffix, temperature, top_p,
max_tokens, min_tokens, stream, stop, random_seed, metadata, prompt_cache_key) plus what Continue's
``@continuedev/openai-adapters`` ``fimStream`` also sends (max_completion_tokens, frequency_penalty,
presence_penalty). Stream chunks carry ``choices[].delta.content`` and end with ``data: [DONE]``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from pydantic import Field

from codetune.generation.request import GenerationRequest
from codetune.serve.protocols.base import Mount, ProtocolModel, one_of, register_protocol
from codetune.serve.responses import sse
from codetune.serve.service import CompletionService, Outcome


class FimRequest(ProtocolModel):
    model: str | None = None
    prompt: str
    suffix: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    min_tokens: int | None = Field(None, ge=0)
    stream: bool = False
    stop: str | list[str] | None = None
    random_seed: int | None = Field(None, ge=0)
    metadata: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)

    def request(self, service: CompletionService) -> GenerationRequest:
        params = service.sampling(
            max_tokens=self.max_tokens if self.max_tokens is not None else self.max_completion_tokens,
            # Mistral's API picks a per-model default; a code completion is best greedy.
            temperature=self.temperature or 0.0,
            top_p=self.top_p or 1.0,
            stop=one_of(self.stop),
            seed=self.random_seed,
            min_new_tokens=self.min_tokens or 0,
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
        )
        return GenerationRequest(self.prompt, self.suffix, params=params, postprocess=service.cfg.postprocess)


def _usage(result: Outcome) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def _reason(result: Outcome) -> str:
    return "length" if result.finish_reason == "length" else "stop"


@register_protocol(
    "fim",
    clients="mistralai fim.complete/fim.stream, Continue (fimStream)",
    example=(
        "/v1/fim/completions",
        {"prompt": "def add(a, b):\n    return ", "suffix": "\n", "max_tokens": 4},
    ),
)
def mount(ctx: Mount) -> None:
    @ctx.post("/v1/fim/completions", FimRequest, stream="sse")
    async def fim_completions(request: Request, body: FimRequest) -> Any:
        generation = await ctx.service.generate(
            [body.request(ctx.service)],
            model=body.model,
            caller=ctx.guard.caller(request),
            disconnected=request.is_disconnected,
            stream=True,
            response_id=f"fim-{uuid.uuid4().hex[:24]}",
        )
        response_id = generation.id
        created = int(time.time())
        if not body.stream:
            result = (await generation.wait()).outcome()
            warning = {"warning": result.warning} if result.warning else {}
            return {
                **warning,
                "id": response_id,
                "object": "chat.completion",
                "model": result.model,
                "created": created,
                "usage": _usage(result),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text, "tool_calls": None},
                        "finish_reason": _reason(result),
                    }
                ],
            }

        def chunk(delta: dict[str, Any], reason: str | None = None, **extra: Any) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": reason}
            return {
                "id": response_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": generation.model,
                "choices": [choice],
                **extra,
            }

        async def events() -> AsyncIterator[dict[str, Any]]:
            yield chunk({"role": "assistant", "content": ""})
            async for _, delta in generation.events():
                if delta:
                    yield chunk({"content": delta})
            result = generation.outcome()
            yield chunk({"content": ""}, _reason(result), usage=_usage(result))

        return sse(events(), done=True)
