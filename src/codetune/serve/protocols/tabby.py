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

from codetune.serve.protocols.base import EditorRequest, Mount, ProtocolModel, register_protocol
from codetune.serve.repos import EditorContext, client_snippet

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

    def editor_request(self) -> EditorRequest:
        from codetune.serve.serving import ServingError

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
                snippets, repo=segments.git_url, hints=[s.path for s in snippets], retrieve=not disabled
            )
        debug = None
        if self.debug_options is not None:
            from codetune.serve.protocol import DebugOptions

            debug = DebugOptions(
                return_snippets=self.debug_options.return_snippets,
                return_prompt=self.debug_options.return_prompt,
            )
        return EditorRequest(
            prompt=raw if raw is not None else segments.prefix,
            suffix=None if raw is not None else segments.suffix or None,
            temperature=self.temperature or 0.0,
            seed=self.seed,
            language=self.language,
            client=self.user,
            filepath=None if raw is not None else segments.filepath,
            context=context,
            debug_options=debug,
        )


class TabbyChoice(BaseModel):
    index: int
    text: str


class TabbyCompletionResponse(BaseModel):
    """Tabby's answer on /v1/completions (declared next to OpenAI's in /openapi.json)."""

    id: str
    choices: list[TabbyChoice]
    debug_data: dict[str, Any] | None = None


async def complete(ctx: Mount, request: Request, raw_body: bytes) -> dict[str, Any]:
    """Answer a Tabby-shaped /v1/completions body (the OpenAI route hands it over)."""
    body = ctx.parse_body(TabbyCompletionRequest, raw_body)
    editor = body.editor_request()
    result = await ctx.engine.complete(editor, request.is_disconnected)
    answer: dict[str, Any] = {
        "id": f"cmpl-{uuid.uuid4()}",
        "choices": [{"index": 0, "text": result.text}],
    }
    if result.debug_data is not None:
        answer["debug_data"] = result.debug_data
    return answer


@register_protocol("tabby", clients="Tabby's VS Code, IntelliJ and Vim plugins (tabby-agent)")
def mount(ctx: Mount) -> None:
    from codetune import __version__

    ctx.app.state.tabby = ctx

    @ctx.get("/v1/health")
    async def health(request: Request) -> Any:
        ctx.guard(request)
        device = ctx.engine.device()
        return {
            # llama.cpp's clients read `status` from /v1/health too.
            "status": "ok",
            "model": ctx.engine.name,
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
        ctx.guard(request)
        return {"disable_client_side_telemetry": True}


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1
