"""Text Generation Inference: ``POST /generate``, ``POST /generate_stream`` (SSE) and ``POST /``.

Fields and shapes: huggingface/text-generation-inference's router (``TgiGenerateRequest``,
``GenerateParameters``, ``GenerateResponse``, ``StreamResponse``) and what
``huggingface_hub.InferenceClient.text_generation`` sends (``{inputs, parameters, stream}``) and parses.
llm-ls (llm-vscode, llm.nvim) sends the FIM prompt already rendered with the model's sentinels in
``inputs``; the tokenizer reads those sentinels back as the special tokens they name.
TGI samples only with ``do_sample``: without it the answer is greedy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from pydantic import Field

from codetune.serve.protocols.base import (
    EditorCompletion,
    EditorRequest,
    Mount,
    ProtocolModel,
    register_protocol,
    sse,
)


class TgiParameters(ProtocolModel):
    adapter_id: str | None = None
    best_of: int | None = Field(None, ge=1, le=1)
    decoder_input_details: bool = False
    details: bool = False
    do_sample: bool = False
    frequency_penalty: float | None = None
    grammar: dict[str, Any] | None = None
    max_new_tokens: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)
    return_full_text: bool | None = None
    seed: int | None = Field(None, ge=0)
    stop: list[str] | None = None
    temperature: float | None = Field(None, gt=0)
    top_k: int | None = Field(None, gt=0)
    top_n_tokens: int | None = None
    top_p: float | None = Field(None, gt=0, lt=1)
    truncate: int | None = None
    typical_p: float | None = None
    watermark: bool = False


class TgiGenerateRequest(ProtocolModel):
    inputs: str
    parameters: TgiParameters = Field(default_factory=TgiParameters)
    stream: bool = False

    def editor_request(self) -> EditorRequest:
        p = self.parameters
        sampling = (
            p.do_sample or (p.temperature is not None and p.temperature != 1.0) or bool(p.top_k or p.top_p)
        )
        return EditorRequest(
            prompt=self.inputs,
            max_tokens=p.max_new_tokens,
            temperature=(p.temperature or 1.0) if sampling else 0.0,
            top_k=p.top_k or 0,
            top_p=p.top_p or 1.0,
            stop=list(p.stop or []),
            seed=p.seed,
            repetition_penalty=p.repetition_penalty or 1.0,
            frequency_penalty=p.frequency_penalty or 0.0,
            model=p.adapter_id,
        )


def _finish(result: EditorCompletion) -> str:
    return "length" if result.finish_reason == "length" else "eos_token"


def _details(result: EditorCompletion, seed: int | None) -> dict[str, Any]:
    return {
        "finish_reason": _finish(result),
        "generated_tokens": result.completion_tokens,
        "seed": seed,
        "prefill": [],
        "tokens": [],
    }


@register_protocol("tgi", clients="huggingface_hub InferenceClient, llm-vscode / llm.nvim (llm-ls)")
def mount(ctx: Mount) -> None:

    async def generate_once(request: Request, body: TgiGenerateRequest) -> dict[str, Any]:
        result = await ctx.engine.complete(body.editor_request(), request.is_disconnected)
        text = body.inputs + result.text if body.parameters.return_full_text else result.text
        answer: dict[str, Any] = {"generated_text": text}
        if body.parameters.details:
            answer["details"] = _details(result, body.parameters.seed)
        return answer

    async def generate_stream(request: Request, body: TgiGenerateRequest) -> Any:
        stream = await ctx.engine.stream(body.editor_request(), request.is_disconnected)

        async def events() -> AsyncIterator[dict[str, Any]]:
            index, text = 0, body.inputs if body.parameters.return_full_text else ""
            async for item in stream:
                index += 1
                if isinstance(item, EditorCompletion):
                    # The last event carries the whole text and the details, with an empty token.
                    token = {"id": 0, "text": "", "logprob": 0.0, "special": True}
                    yield {
                        "index": index,
                        "token": token,
                        "top_tokens": None,
                        "generated_text": text,
                        "details": _details(item, body.parameters.seed),
                    }
                else:
                    text += item
                    token = {"id": 0, "text": item, "logprob": 0.0, "special": False}
                    yield {
                        "index": index,
                        "token": token,
                        "top_tokens": None,
                        "generated_text": None,
                        "details": None,
                    }

        return sse(events())

    @ctx.post("/generate", TgiGenerateRequest, stream="sse")
    async def generate(request: Request) -> Any:
        body = await ctx.parse(TgiGenerateRequest, request)
        if body.stream:
            return await generate_stream(request, body)
        return await generate_once(request, body)

    @ctx.post("/generate_stream", TgiGenerateRequest, stream="sse")
    async def generate_stream_route(request: Request) -> Any:
        return await generate_stream(request, await ctx.parse(TgiGenerateRequest, request))

    @ctx.post("/", TgiGenerateRequest, stream="sse", answer={"type": "array", "items": {"type": "object"}})
    async def compat_generate(request: Request) -> Any:
        """TGI's root route: a stream when asked, else a one-element list."""
        body = await ctx.parse(TgiGenerateRequest, request)
        if body.stream:
            return await generate_stream(request, body)
        return [await generate_once(request, body)]
