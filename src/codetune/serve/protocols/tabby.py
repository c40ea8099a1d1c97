"""Tabby: ``POST /v1/completions`` with ``segments``, ``GET /v1/health``, ``GET /v1beta/server_setting``.

Fields and shapes: TabbyML/tabby crates/tabby/src/services/completion.rs (``CompletionRequest``,
``TabbySegments``, ``TabbyDeclaration``, ``TabbySnippet``, ``TabbyDebugOptions``, ``CompletionResponse``) and the body
tabby-agent builds (clients/tabby-agent). Tabby's body shares its path with OpenAI's completions:
:func:`is_tabby` tells them apart by shape. ``declarations`` and the ``relevant_snippets_*`` become the
prompt's context (first, then what the server retrieves from the ``--repo`` of ``filepath``/``git_url``);
``debug_options`` returns ``debug_data: {snippets, prompt}`` as Tabby does.
Without ``temperature`` the answer is greedy.
"""

from __future__ import annotations

import platform
import uuid
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field

from codetune.generation.request import GenerationRequest
from codetune.serve.protocols.base import Mount, ProtocolModel, register_protocol
from codetune.serve.repos import EditorContext, client_snippet
from codetune.serve.responses import ServingError
from codetune.serve.service import CompletionService

# A Tabby body names its code in `segments` (or `debug_options.raw_prompt`); OpenAI's in `prompt`.
TABBY_ONLY_FIELDS = {"segments", "language", "debug_options", "mode"}


def is_tabby(body: bytes) -> bool:
    """Whether a /v1/completions body is Tabby's rather than OpenAI's."""
    import json

    try:
        data = json.loads(body or b"null")
    except (ValueError, RecursionError):  # the OpenAI route answers a malformed body with its 400
        return False
    return isinstance(data, dict) and "prompt" not in data and bool(TABBY_ONLY_FIELDS & data.keys())


class TabbyDeclaration(BaseModel):
    filepath: str
    body: str


class TabbySnippet(BaseModel):
    filepath: str
    body: str
    score: float


class TabbyEditHistory(BaseModel):
    original_code: str
    edits_diff: str
    current_version: str


class TabbySegments(ProtocolModel):
    prefix: str
    suffix: str | None = None
    filepath: str | None = None
    git_url: str | None = None
    declarations: list[TabbyDeclaration] | None = None
    relevant_snippets_from_changed_files: list[TabbySnippet] | None = None
    relevant_snippets_from_recently_opened_files: list[TabbySnippet] | None = None
    clipboard: str | None = None
    edit_history: TabbyEditHistory | None = None


class TabbyDebugOptions(ProtocolModel):
    raw_prompt: str | None = None
    return_snippets: bool = False
    return_prompt: bool = False
    disable_retrieval_augmented_code_completion: bool = False


class TabbyCompletionRequest(ProtocolModel):
    language: str | None = None
    segments: TabbySegments | None = None
    user: str | None = None
    debug_options: TabbyDebugOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    seed: int | None = Field(None, ge=0)
    mode: str = "standard"

    def request(self, service: CompletionService) -> tuple[GenerationRequest, EditorContext]:
        """The typed request, and what the editor says of the cursor's file and repository."""
        if self.mode != "standard":
            raise ServingError(400, f"mode {self.mode!r} is not supported (only 'standard')", param="mode")
        raw = self.debug_options.raw_prompt if self.debug_options else None
        if raw is None and self.segments is None:
            raise ServingError(400, "empty prompt from completion request", param="segments")
        segments = self.segments
        context = EditorContext(retrieve=False)  # a raw prompt is passed as it is, as Tabby does
        if raw is None and segments is not None:
            # Tabby's order: declarations from the editor's LSP, then snippets of changed, then of
            # recently opened files (each list already deduplicated against the ones before it).
            sent = [
                *(segments.declarations or []),
                *(segments.relevant_snippets_from_changed_files or []),
                *(segments.relevant_snippets_from_recently_opened_files or []),
            ]
            snippets = [client_snippet(s.filepath, s.body, getattr(s, "score", None)) for s in sent]
            disabled = bool(
                self.debug_options and self.debug_options.disable_retrieval_augmented_code_completion
            )
            context = EditorContext(
                snippets,
                filepath=segments.filepath,
                repo=segments.git_url,
                hints=[s.path for s in snippets],
                retrieve=not disabled,
            )
        params = service.sampling(temperature=self.temperature or 0.0, seed=self.seed)
        request = GenerationRequest(
            raw if raw is not None else segments.prefix,
            None if raw is not None else segments.suffix or None,
            params=params,
            language=self.language,
            postprocess=service.cfg.postprocess,
        )
        return request, context


class TabbyChoice(BaseModel):
    index: int
    text: str


class TabbyCompletionResponse(BaseModel):
    """Tabby's answer on /v1/completions (declared next to OpenAI's in /openapi.json)."""

    id: str
    choices: list[TabbyChoice]
    debug_data: dict[str, Any] | None = None


@register_protocol(
    "tabby",
    clients="Tabby's VS Code, IntelliJ and Vim plugins (tabby-agent)",
    example=(
        "/v1/completions",
        {"language": "python", "segments": {"prefix": "def add(a, b):\n    return ", "suffix": "\n"}},
    ),
)
def mount(ctx: Mount) -> None:
    from codetune import __version__

    # Tabby's plugins post their own body (`segments`) to OpenAI's path: this protocol takes those.
    @ctx.post("/v1/completions", TabbyCompletionRequest, answer=TabbyCompletionResponse, accepts=is_tabby)
    async def complete(request: Request, body: TabbyCompletionRequest) -> Any:
        ask, editor = body.request(ctx.service)
        generation = await ctx.service.generate(
            [ask],
            client=body.user,
            caller=ctx.guard.caller(request),
            editor=editor,
            disconnected=request.is_disconnected,
            stream=True,
            response_id=f"cmpl-{uuid.uuid4()}",  # Tabby's own id shape; its editor events name it
        )
        result = (await generation.wait()).outcome()
        answer: dict[str, Any] = {
            "id": generation.id,
            "choices": [{"index": 0, "text": result.text}],
        }
        if body.debug_options is not None:
            debug = body.debug_options
            answer["debug_data"] = generation.debug_data(
                snippets=debug.return_snippets, prompt=debug.return_prompt
            )
        return answer

    @ctx.get("/v1/health")
    async def health(request: Request) -> Any:
        device = ctx.service.device
        return {
            # llama.cpp's clients read `status` from /v1/health too.
            "status": "ok",
            "model": ctx.service.name,
            "chat_model": None,
            "chat_device": None,
            "device": "cuda" if device.startswith("cuda") else device,
            "arch": platform.machine(),
            "cpu_info": platform.processor() or platform.machine(),
            "cpu_count": _cpu_count(),
            "accelerators": [],
            "cuda_devices": [],
            "version": {
                "build_date": "",
                "build_timestamp": "",
                "git_sha": "",
                "git_describe": f"codetune-{__version__}",
            },
        }

    @ctx.get("/v1beta/server_setting")
    async def server_setting(request: Request) -> Any:
        return {"disable_client_side_telemetry": True}


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1
