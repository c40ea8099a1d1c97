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

from codetune.generation.request import GenerationRequest
from codetune.serve.protocols.base import Mount, ProtocolModel, register_protocol
from codetune.serve.responses import sse
from codetune.serve.service import CompletionService, Generation, Outcome


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

    def request(self, service: CompletionService) -> GenerationRequest:
        p = self.parameters
        sampling = (
            p.do_sample or (p.temperature is not None and p.temperature != 1.0) or bool(p.top_k or p.top_p)
        )
        params = service.sampling(
            max_tokens=p.max_new_tokens,
            temperature=(p.temperature or 1.0) if sampling else 0.0,
            top_k=p.top_k or 0,
            top_p=p.top_p or 1.0,
            stop=list(p.stop or []),
            seed=p.seed,
            repetition_penalty=p.repetition_penalty or 1.0,
            frequency_penalty=p.frequency_penalty or 0.0,
        )
        return GenerationRequest(self.inputs, params=params, postprocess=service.cfg.postprocess)


def _finish(result: Outcome) -> str:
    return "length" if result.finish_reason == "length" else "eos_token"


def _details(result: Outcome, seed: int | None) -> dict[str, Any]:
    return {
        "finish_reason": _finish(result),
        "generated_tokens": result.completion_tokens,
        "seed": seed,
        "prefill": [],
        "tokens": [],
    }


@register_protocol(
    "tgi",
    clients="huggingface_hub InferenceClient, llm-vscode / llm.nvim (llm-ls)",
    example=("/generate", {"inputs": "def add(a, b):\n    return", "parameters": {"max_new_tokens": 4}}),
)
def mount(ctx: Mount) -> None:
    async def start(request: Request, body: TgiGenerateRequest) -> Generation:
        return await ctx.service.generate(
            [body.request(ctx.service)],
            model=body.parameters.adapter_id,
            caller=ctx.guard.caller(request),
            disconnected=request.is_disconnected,
            stream=True,
        )

    async def generate_once(request: Request, body: TgiGenerateRequest) -> dict[str, Any]:
        result = (await (await start(request, body)).wait()).outcome()
        text = body.inputs + result.text if body.parameters.return_full_text else result.text
        answer: dict[str, Any] = {"generated_text": text}
        if body.parameters.details:
            answer["details"] = _details(result, body.parameters.seed)
        return answer

    async def generate_stream(request: Request, body: TgiGenerateRequest) -> Any:
        generation = await start(request, body)

        async def events() -> AsyncIterator[dict[str, Any]]:
            index, text = 0, body.inputs if body.parameters.return_full_text else ""
            async for _, delta in generation.events():
                if not delta:
                    continue
                index += 1
                text += delta
                token = {"id": 0, "text": delta, "logprob": 0.0, "special": False}
                yield {
                    "index": index,
                    "token": token,
                    "top_tokens": None,
                    "generated_text": None,
                    "details": None,
                }
            # The last event carries the whole text and the details, with an empty token.
            token = {"id": 0, "text": "", "logprob": 0.0, "special": True}
            yield {
                "index": index + 1,
                "token": token,
                "top_tokens": None,
                "generated_text": text,
                "details": _details(generation.outcome(), body.parameters.seed),
            }

        return sse(events())

    @ctx.post("/generate", TgiGenerateRequest, stream="sse")
    async def generate(request: Request, body: TgiGenerateRequest) -> Any:
        if body.stream:
            return await generate_stream(request, body)
        return await generate_once(request, body)

    @ctx.post("/generate_stream", TgiGenerateRequest, stream="sse")
    async def generate_stream_route(request: Request, body: TgiGenerateRequest) -> Any:
        return await generate_stream(request, body)

    @ctx.post("/", TgiGenerateRequest, stream="sse", answer={"type": "array", "items": {"type": "object"}})
    async def compat_generate(request: Request, body: TgiGenerateRequest) -> Any:
        """TGI's root route: a stream when asked, else a one-element list."""
        if body.stream:
            return await generate_stream(request, body)
        return [await generate_once(request, body)]
