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

from codetune.serve.protocols.base import (
    EditorCompletion,
    EditorRequest,
    Mount,
    ProtocolModel,
    one_of,
    register_protocol,
    sse,
)


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

    def editor_request(self) -> EditorRequest:
        return EditorRequest(
            prompt=self.prompt,
            suffix=self.suffix,
            max_tokens=self.max_tokens if self.max_tokens is not None else self.max_completion_tokens,
            # Mistral's API picks a per-model default; a code completion is best greedy.
            temperature=self.temperature or 0.0,
            top_p=self.top_p or 1.0,
            stop=one_of(self.stop),
            seed=self.random_seed,
            min_tokens=self.min_tokens or 0,
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            model=self.model,
        )


def _usage(result: EditorCompletion) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def _reason(result: EditorCompletion) -> str:
    return "length" if result.finish_reason == "length" else "stop"


@register_protocol("fim", clients="mistralai fim.complete/fim.stream, Continue (fimStream)")
def mount(ctx: Mount) -> None:
    @ctx.post("/v1/fim/completions", FimRequest, stream="sse")
    async def fim_completions(request: Request) -> Any:
        body = await ctx.parse(FimRequest, request)
        editor = body.editor_request()
        response_id = f"fim-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not body.stream:
            result = await ctx.engine.complete(editor, request.is_disconnected)
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
        stream = await ctx.engine.stream(editor, request.is_disconnected)
        model = editor.model or ctx.engine.name

        def chunk(delta: dict[str, Any], reason: str | None = None, **extra: Any) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": reason}
            return {
                "id": response_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
                **extra,
            }

        async def events() -> AsyncIterator[dict[str, Any]]:
            yield chunk({"role": "assistant", "content": ""})
            async for item in stream:
                if isinstance(item, EditorCompletion):
                    yield chunk({"content": ""}, _reason(item), usage=_usage(item))
                else:
                    yield chunk({"content": item})

        return sse(events(), done=True)
