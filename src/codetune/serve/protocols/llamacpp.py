"""llama.cpp's server: ``POST /infill``, ``POST /completion`` (JSON or SSE), ``GET /health``.

Fields and shapes: ggml-org/llama.cpp tools/server/README.md ("POST /completion", "POST /infill",
"GET /health", which the server's own /health already answers); the /infill body llama.vim and llama.vscode send (ggml-org/llama.vim autoload/llama.vim).
The infill prompt is ``input_prefix + prompt`` before the cursor and ``input_suffix`` after it:
llama.vim sends the current line's start as ``prompt``. ``input_extra`` chunks (llama.vim's ring of
recently seen chunks) become the prompt's context, first, then what the server retrieves from the
``--repo`` their files are in; ``filepath`` (a codetune extension) names the file being completed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field

from codetune.generation.request import GenerationRequest
from codetune.serve.protocols.base import Mount, ProtocolModel, one_of, register_protocol
from codetune.serve.repos import EditorContext, client_snippet
from codetune.serve.responses import ServingError, sse
from codetune.serve.service import CompletionService, Generation, Outcome


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
        raise ServingError(400, "token-id prompts are not supported on this route", param="prompt")

    def request(self, service: CompletionService, prefix: str, suffix: str | None) -> GenerationRequest:
        samplers = set(self.samplers) if self.samplers is not None else None

        def sampler(name: str, value: Any, default: Any, neutral: Any) -> Any:
            # llama.cpp applies only the samplers listed in `samplers`.
            if samplers is not None and name not in samplers:
                return neutral
            return default if value is None else value

        predict = self.n_predict
        params = service.sampling(
            max_tokens=predict if predict is not None and predict >= 0 else None,
            temperature=max(0.0, sampler("temperature", self.temperature, 0.8, 1.0)),
            top_k=sampler("top_k", self.top_k, 40, 0),
            top_p=sampler("top_p", self.top_p, 0.95, 1.0) or 1.0,
            stop=one_of(self.stop),
            seed=self.seed if self.seed is not None and self.seed >= 0 else None,
            repetition_penalty=self.repeat_penalty or 1.0,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
        )
        return GenerationRequest(
            prefix,
            suffix,
            params=params,
            postprocess=service.cfg.postprocess,
            # cache_prompt: false keeps this prompt out of the prefix cache (no reuse, no store)
            cache_prompt=self.cache_prompt is not False,
        )

    @property
    def client(self) -> str | None:
        """A slot: a newer request on the same slot cancels the older one (llama.vim's keystrokes)."""
        return None if self.id_slot is None or self.id_slot < 0 else f"llama.cpp-slot-{self.id_slot}"


class LlamaInfillRequest(LlamaCompletionRequest):
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[LlamaExtraChunk] | None = None
    # codetune extension: the file being completed (llama.cpp's body has no field for it)
    filepath: str | None = Field(None, max_length=4096)

    def context(self) -> EditorContext:
        snippets = [client_snippet(c.filename, c.text) for c in self.input_extra or [] if c.text.strip()]
        return EditorContext(snippets, filepath=self.filepath, hints=[s.path for s in snippets if s.path])


def cut_below_indent(text: str, n_indent: int) -> str:
    """Stop at the first new non-blank line indented less than ``n_indent`` (llama.cpp's n_indent)."""
    if n_indent <= 0:
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() and len(line) - len(line.lstrip(" \t")) < n_indent:
            return "\n".join(lines[:i]) + "\n"
    return text


def _timings(result: Outcome) -> dict[str, float]:
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


def final_body(body: LlamaCompletionRequest, result: Outcome, text: str, ctx: Mount) -> dict[str, Any]:
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
            "n_ctx": ctx.service.context,
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


async def _texts(generation: Generation, body: LlamaCompletionRequest) -> AsyncIterator[str]:
    """The row's text deltas under llama.cpp's time budgets: ``t_max_prompt_ms`` (once prompt processing
    took longer, the first token is the last) and ``t_max_predict_ms`` (once generating took longer,
    stop after a newline)."""
    text = ""
    async for _, delta in generation.events():
        if delta is None:
            return
        first = generation.first_token_at or generation.started
        if (
            body.t_max_prompt_ms
            and len(text) == 0
            and (first - generation.started) * 1000 > body.t_max_prompt_ms
        ):
            generation.cancel()
        text += delta
        if delta:
            yield delta
        if (
            body.t_max_predict_ms
            and "\n" in text
            and (time.monotonic() - first) * 1000 > body.t_max_predict_ms
        ):
            generation.cancel()
            return


async def answer(
    ctx: Mount, request: Request, body: LlamaCompletionRequest, prefix: str, suffix: str | None
) -> Any:
    editor = body.context() if isinstance(body, LlamaInfillRequest) else None
    generation = await ctx.service.generate(
        [body.request(ctx.service, prefix, suffix)],
        model=body.model,
        client=body.client,
        caller=ctx.guard.caller(request),
        editor=editor,
        disconnected=request.is_disconnected,
        stream=True,
    )
    if not body.stream:
        text = "".join([delta async for delta in _texts(generation, body)])
        generation.close()
        return final_body(body, generation.outcome(), cut_below_indent(text, body.n_indent), ctx)

    async def events() -> AsyncIterator[dict[str, Any]]:
        sent = ""
        try:
            async for item in _texts(generation, body):
                text = cut_below_indent(sent + item, body.n_indent)
                if text != sent + item:
                    # The indentation limit was reached: send what fits, then end like a stop.
                    if len(text) > len(sent):
                        yield {"index": 0, "content": text[len(sent) :], "tokens": [], "stop": False}
                    yield {"index": 0, "content": "", "stop": True, "stop_type": "eos"}
                    return
                sent = text
                yield {"index": 0, "content": item, "tokens": [], "stop": False, "id_slot": body.id_slot or 0}
        finally:
            generation.close()
        yield final_body(body, generation.outcome(), "", ctx)

    return sse(events())


@register_protocol(
    "llamacpp",
    clients="llama.vim, llama.vscode, llama.cpp's /completion clients",
    example=(
        "/infill",
        {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n", "n_predict": 4},
    ),
)
def mount(ctx: Mount) -> None:
    @ctx.post("/infill", LlamaInfillRequest, stream="sse")
    async def infill(request: Request, body: LlamaInfillRequest) -> Any:
        return await answer(ctx, request, body, body.input_prefix + body.text_prompt(), body.input_suffix)

    @ctx.post("/completion", LlamaCompletionRequest, stream="sse")
    async def completion(request: Request, body: LlamaCompletionRequest) -> Any:
        return await answer(ctx, request, body, body.text_prompt(), None)
