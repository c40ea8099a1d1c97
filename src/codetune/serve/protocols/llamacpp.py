"""llama.cpp's server: ``POST /infill``, ``POST /completion`` (JSON or SSE), ``GET /health``.

Fields and shapes: ggml-org/llama.cpp tools/server/README.md ("POST /completion", "POST /infill",
"GET /health", which the server's own /health already answers); the /infill body llama.vim and llama.vscode send (ggml-org/llama.vim autoload/llama.vim).
The infill prompt is ``input_prefix + prompt`` before the cursor and ``input_suffix`` after it:
llama.vim sends the current line's start as ``prompt``. ``input_extra`` chunks (llama.vim's ring of
recently seen chunks) become the prompt's context, first, then what the server retrieves from the
``--repo`` their files are in; ``filepath`` (a codetune extension) names the file being completed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field

from codetune.serve.protocols.base import (
    EditorCompletion,
    EditorRequest,
    Mount,
    ProtocolModel,
    one_of,
    register_protocol,
    sse,
)
from codetune.serve.repos import EditorContext, client_snippet


class LlamaExtraChunk(BaseModel):
    filename: str = ""
    text: str = ""
    # llama.vim adds the time it picked the chunk.
    time: float | None = None


class LlamaCompletionRequest(ProtocolModel):
    """The options of POST /completion (and of /infill, which accepts them all)."""

    prompt: str | list[Any] = ""
    temperature: float | None = None
    dynatemp_range: float | None = None
    dynatemp_exponent: float | None = None
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0, le=1)
    min_p: float | None = None
    n_predict: int | None = None
    n_indent: int = Field(0, ge=0)
    n_keep: int | None = None
    n_cmpl: int | None = None
    n_cache_reuse: int | None = None
    stream: bool = False
    stop: list[str] | None = None
    typical_p: float | None = None
    repeat_penalty: float | None = Field(None, gt=0)
    repeat_last_n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    dry_multiplier: float | None = None
    dry_base: float | None = None
    dry_allowed_length: int | None = None
    dry_penalty_last_n: int | None = None
    dry_sequence_breakers: list[str] | None = None
    xtc_probability: float | None = None
    xtc_threshold: float | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None
    seed: int | None = None
    ignore_eos: bool | None = None
    logit_bias: Any = None
    n_probs: int | None = None
    min_keep: int | None = None
    t_max_prompt_ms: float | None = Field(None, ge=0)
    t_max_predict_ms: float | None = Field(None, ge=0)
    id_slot: int | None = None
    cache_prompt: bool | None = None
    return_tokens: bool | None = None
    samplers: list[str] | None = None
    timings_per_token: bool | None = None
    return_progress: bool | None = None
    post_sampling_probs: bool | None = None
    response_fields: list[str] | None = None
    lora: list[dict[str, Any]] | None = None
    model: str | None = None

    def text_prompt(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if all(isinstance(part, str) for part in self.prompt):
            return "".join(self.prompt)
        from codetune.serve.serving import ServingError

        raise ServingError(400, "token-id prompts are not supported on this route", param="prompt")

    def editor_request(self, prefix: str, suffix: str | None) -> EditorRequest:
        samplers = set(self.samplers) if self.samplers is not None else None

        def sampler(name: str, value: Any, default: Any, neutral: Any) -> Any:
            # llama.cpp applies only the samplers listed in `samplers`.
            if samplers is not None and name not in samplers:
                return neutral
            return default if value is None else value

        predict = self.n_predict
        return EditorRequest(
            prompt=prefix,
            suffix=suffix,
            max_tokens=predict if predict is not None and predict >= 0 else None,
            temperature=max(0.0, sampler("temperature", self.temperature, 0.8, 1.0)),
            top_k=sampler("top_k", self.top_k, 40, 0),
            top_p=sampler("top_p", self.top_p, 0.95, 1.0) or 1.0,
            stop=one_of(self.stop),
            seed=self.seed if self.seed is not None and self.seed >= 0 else None,
            repetition_penalty=self.repeat_penalty or 1.0,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            model=self.model,
            client=None if self.id_slot is None or self.id_slot < 0 else f"llama.cpp-slot-{self.id_slot}",
            max_prompt_ms=self.t_max_prompt_ms or None,
            max_predict_ms=self.t_max_predict_ms or None,
            cache_prompt=self.cache_prompt is not False,
        )


class LlamaInfillRequest(LlamaCompletionRequest):
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[LlamaExtraChunk] | None = None
    # codetune extension: the file being completed (llama.cpp's body has no field for it)
    filepath: str | None = Field(None, max_length=4096)

    def context(self) -> EditorContext:
        snippets = [client_snippet(c.filename, c.text) for c in self.input_extra or [] if c.text.strip()]
        return EditorContext(snippets, hints=[s.path for s in snippets if s.path])


def cut_below_indent(text: str, n_indent: int) -> str:
    """Stop at the first new non-blank line indented less than ``n_indent`` (llama.cpp's n_indent)."""
    if n_indent <= 0:
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() and len(line) - len(line.lstrip(" \t")) < n_indent:
            return "\n".join(lines[:i]) + "\n"
    return text


def _timings(result: EditorCompletion) -> dict[str, float]:
    prompt_n, predicted_n = result.prompt_tokens, result.completion_tokens
    return {
        "prompt_n": prompt_n,
        "prompt_ms": result.prompt_ms,
        "prompt_per_token_ms": result.prompt_ms / max(prompt_n, 1),
        "prompt_per_second": 1000 * prompt_n / max(result.prompt_ms, 1e-6),
        "predicted_n": predicted_n,
        "predicted_ms": result.predict_ms,
        "predicted_per_token_ms": result.predict_ms / max(predicted_n, 1),
        "predicted_per_second": 1000 * predicted_n / max(result.predict_ms, 1e-6),
    }


def final_body(
    body: LlamaCompletionRequest, result: EditorCompletion, text: str, ctx: Mount
) -> dict[str, Any]:
    stop_type = {"length": "limit", "stop": "eos"}.get(result.finish_reason, "limit")
    full = {
        "index": 0,
        "content": text,
        "tokens": [],
        "id_slot": body.id_slot if body.id_slot is not None else 0,
        "stop": True,
        "model": result.model,
        "tokens_predicted": result.completion_tokens,
        "tokens_evaluated": result.prompt_tokens,
        "generation_settings": {
            "n_ctx": ctx.engine.context_length,
            "n_predict": body.n_predict if body.n_predict is not None else -1,
            "temperature": body.temperature,
            "top_k": body.top_k,
            "top_p": body.top_p,
            "n_indent": body.n_indent,
            "stream": body.stream,
        },
        "prompt": "",
        "has_new_line": "\n" in text,
        "truncated": result.truncated,
        "stop_type": stop_type,
        "stopping_word": "",
        "tokens_cached": result.cached_tokens,
        "timings": _timings(result),
    }
    return select_fields(full, body.response_fields)


def select_fields(full: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    """llama.cpp's ``response_fields``: keep the listed ones; ``a/b`` lifts ``full[a][b]`` to ``b``."""
    if not fields:
        return full
    kept: dict[str, Any] = {}
    for name in fields:
        value: Any = full
        for part in name.split("/"):
            value = value.get(part) if isinstance(value, dict) else None
            if value is None:
                break
        if value is not None:
            kept[name.split("/")[-1]] = value
    return kept


async def answer(
    ctx: Mount, request: Request, body: LlamaCompletionRequest, prefix: str, suffix: str | None
) -> Any:
    editor = body.editor_request(prefix, suffix)
    if isinstance(body, LlamaInfillRequest):
        editor.filepath, editor.context = body.filepath, body.context()
    if not body.stream:
        result = await ctx.engine.complete(editor, request.is_disconnected)
        return final_body(body, result, cut_below_indent(result.text, body.n_indent), ctx)
    stream = await ctx.engine.stream(editor, request.is_disconnected)

    async def events() -> AsyncIterator[dict[str, Any]]:
        sent = ""
        async for item in stream:
            if isinstance(item, EditorCompletion):
                yield final_body(body, item, "", ctx)
                return
            text = cut_below_indent(sent + item, body.n_indent)
            if text != sent + item:
                # The indentation limit was reached: send what fits, then end like a stop.
                if len(text) > len(sent):
                    yield {"index": 0, "content": text[len(sent) :], "tokens": [], "stop": False}
                await stream.aclose()
                yield {"index": 0, "content": "", "stop": True, "stop_type": "eos"}
                return
            sent = text
            yield {"index": 0, "content": item, "tokens": [], "stop": False, "id_slot": body.id_slot or 0}

    return sse(events())


@register_protocol("llamacpp", clients="llama.vim, llama.vscode, llama.cpp's /completion clients")
def mount(ctx: Mount) -> None:
    @ctx.post("/infill", LlamaInfillRequest, stream="sse")
    async def infill(request: Request) -> Any:
        body = await ctx.parse(LlamaInfillRequest, request)
        return await answer(ctx, request, body, body.input_prefix + body.text_prompt(), body.input_suffix)

    @ctx.post("/completion", LlamaCompletionRequest, stream="sse")
    async def completion(request: Request) -> Any:
        body = await ctx.parse(LlamaCompletionRequest, request)
        return await answer(ctx, request, body, body.text_prompt(), None)
