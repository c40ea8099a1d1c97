"""Ollama: ``POST /api/generate`` (NDJSON stream), ``GET /api/tags``, ``POST /api/show``, ``GET /api/version``.

Fields and shapes: ollama/ollama docs/api.md ("Generate a completion", "List Local Models", "Show Model
Information", "Version") and the ``ollama`` Python client's ``OllamaGenerateRequest``/``OllamaOptions`` models.
Defaults of ``options`` (temperature 0.8, top_k 40, top_p 0.9) are the Modelfile's (docs/modelfile.md).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from fastapi import Request
from pydantic import Field

from codetune.generation.request import GenerationRequest
from codetune.serve.protocols.base import Mount, ProtocolModel, one_of, register_protocol
from codetune.serve.responses import ndjson
from codetune.serve.service import CompletionService, Outcome

VERSION = "0.6.0"  # the Ollama API level these routes follow


class OllamaOptions(ProtocolModel):
    """Ollama's runtime options (docs/api.md "Generate request (With options)")."""

    num_keep: int | None = None
    seed: int | None = None
    num_predict: int | None = None
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0, le=1)
    min_p: float | None = None
    tfs_z: float | None = None
    typical_p: float | None = None
    repeat_last_n: int | None = None
    temperature: float | None = Field(None, ge=0)
    repeat_penalty: float | None = Field(None, gt=0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    penalize_newline: bool | None = None
    stop: list[str] | None = None
    numa: bool | None = None
    num_ctx: int | None = None
    num_batch: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    low_vram: bool | None = None
    f16_kv: bool | None = None
    logits_all: bool | None = None
    vocab_only: bool | None = None
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    embedding_only: bool | None = None
    num_thread: int | None = None


class OllamaGenerateRequest(ProtocolModel):
    model: str
    prompt: str | None = None
    suffix: str | None = None
    images: list[str] | None = None
    format: str | dict[str, Any] | None = None
    options: OllamaOptions | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    stream: bool = True
    raw: bool | None = None
    keep_alive: str | int | float | None = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def request(self, service: CompletionService) -> GenerationRequest:
        options = self.options or OllamaOptions()
        predict = options.num_predict
        params = service.sampling(
            # -1 (no limit) and -2 (fill the context) fall back to the server's default length.
            max_tokens=predict if predict is not None and predict >= 0 else None,
            temperature=0.8 if options.temperature is None else options.temperature,
            top_k=40 if options.top_k is None else options.top_k,
            top_p=0.9 if options.top_p is None or options.top_p == 0 else options.top_p,
            stop=one_of(options.stop),
            seed=options.seed,
            repetition_penalty=options.repeat_penalty or 1.0,
            presence_penalty=options.presence_penalty or 0.0,
            frequency_penalty=options.frequency_penalty or 0.0,
        )
        # A code model has no chat template: prompt and suffix are always used raw.
        return GenerationRequest(
            self.prompt or "", self.suffix, params=params, postprocess=service.cfg.postprocess
        )


class OllamaShowRequest(ProtocolModel):
    model: str | None = None
    name: str | None = None  # the older spelling of `model`
    verbose: bool | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _stats(result: Outcome) -> dict[str, Any]:
    ns = 1_000_000
    return {
        "done_reason": "length" if result.finish_reason == "length" else "stop",
        "total_duration": int((result.prompt_ms + result.predict_ms) * ns),
        "load_duration": 0,
        "prompt_eval_count": result.prompt_tokens,
        "prompt_eval_duration": int(result.prompt_ms * ns),
        "eval_count": result.completion_tokens,
        "eval_duration": int(result.predict_ms * ns),
    }


def _details(service: CompletionService, name: str | None = None) -> dict[str, Any]:
    config = service.model.config
    adapter = service.adapter_for(name)
    return {
        "parent_model": service.name if adapter else "",
        "format": "safetensors",
        "family": config.model_type,
        "families": [config.model_type],
        "parameter_size": _parameter_size(service.model),
        "quantization_level": str(getattr(service.model, "dtype", "")).replace("torch.", ""),
    }


def _parameter_size(model: Any) -> str:
    count = sum(p.numel() for p in model.parameters())
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


@register_protocol(
    "ollama",
    clients="ollama Python/JS clients, Continue (ollama provider), Vim/Emacs plugins",
    example=(
        "/api/generate",
        {"model": "codetune", "prompt": "def add(a, b):\n    return", "options": {"num_predict": 4}},
    ),
)
def mount(ctx: Mount) -> None:
    service = ctx.service

    @ctx.post("/api/generate", OllamaGenerateRequest, stream="ndjson")
    async def generate(request: Request, body: OllamaGenerateRequest) -> Any:
        service.adapter_for(body.model)  # a 404 before anything, as Ollama's own "model not found"
        if not body.prompt and body.suffix is None:
            # Ollama answers an empty prompt by loading the model: nothing to generate.
            return {
                "model": body.model,
                "created_at": _now(),
                "response": "",
                "done": True,
                "done_reason": "load",
            }
        generation = await service.generate(
            [body.request(service)],
            model=body.model,
            client=request.headers.get("x-client-id"),
            caller=ctx.guard.caller(request),
            disconnected=request.is_disconnected,
            stream=True,
        )
        if not body.stream:
            result = (await generation.wait()).outcome()
            return {
                "model": body.model,
                "created_at": _now(),
                "response": result.text,
                "done": True,
                **_stats(result),
            }

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for _, delta in generation.events():
                if delta:
                    yield {"model": body.model, "created_at": _now(), "response": delta, "done": False}
            yield {
                "model": body.model,
                "created_at": _now(),
                "response": "",
                "done": True,
                **_stats(generation.outcome()),
            }

        return ndjson(events())

    @ctx.get("/api/tags")
    async def tags(request: Request) -> Any:
        modified = datetime.fromtimestamp(service.started, timezone.utc).isoformat()
        return {
            "models": [
                {
                    "name": name,
                    "model": name,
                    "modified_at": modified,
                    "size": 0,
                    "digest": "",
                    "details": _details(service, name),
                }
                for name in service.model_names()
            ]
        }

    @ctx.post("/api/show", OllamaShowRequest)
    async def show(request: Request, body: OllamaShowRequest) -> Any:
        name = body.model or body.name
        config = service.model.config
        return {
            "modelfile": f"FROM {name or service.name}\n",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": _details(service, name),
            "model_info": {
                "general.architecture": config.model_type,
                f"{config.model_type}.context_length": service.context,
            },
            "capabilities": ["completion", "insert"],
            "modified_at": datetime.fromtimestamp(time.time(), timezone.utc).isoformat(),
        }

    @ctx.get("/api/version", guarded=False)
    async def version(request: Request) -> Any:
        return {"version": VERSION}
