"""Copilot / FauxPilot: ``POST /v1/engines/{engine}/completions`` and ``GET /copilot_internal/v2/token``.

The body is OpenAI's completion request plus the two fields the Copilot override and the FauxPilot
extension add: ``nwo`` (the repository, "owner/name") and ``extra`` (language, next_indent,
trim_by_indentation, prompt_tokens, suffix_tokens). The engine name in the path stands for the model.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict

from codetune.serve.protocols.base import Mount, register_protocol
from codetune.serve.protocols.openai import CompletionRequest, CompletionResponse, complete


class CopilotExtra(BaseModel):
    # Copilot adds fields here over time; none of them changes what the model is asked.
    model_config = ConfigDict(extra="allow")

    language: str | None = None
    next_indent: int | None = None
    trim_by_indentation: bool | None = None
    prompt_tokens: int | None = None
    suffix_tokens: int | None = None


class CopilotCompletionRequest(CompletionRequest):
    nwo: str | None = None
    extra: CopilotExtra | None = None


@register_protocol(
    "copilot",
    clients="GitHub Copilot (debug.overrideProxyUrl), FauxPilot extension",
    example=(
        "/v1/engines/codegen/completions",
        {
            "prompt": "def add(a, b):\n    return",
            "max_tokens": 4,
            "temperature": 0,
            "extra": {"language": "python"},
        },
    ),
)
def mount(ctx: Mount) -> None:
    @ctx.post(
        "/v1/engines/{engine}/completions", CopilotCompletionRequest, stream="sse", answer=CompletionResponse
    )
    async def engine_completions(request: Request, body: CopilotCompletionRequest) -> Any:
        # The engine in the path names the model (an adapter's name picks that adapter).
        body.model = body.model or request.path_params["engine"]
        return await complete(ctx, request, body)

    @ctx.get("/copilot_internal/v2/token")
    async def copilot_token(request: Request) -> Any:
        now = int(time.time())
        return {"token": f"codetune-{uuid.uuid4().hex[:16]}", "expires_at": now + 3600, "refresh_in": 1500}
