"""Thin FastAPI routes over OpenAIServing (JSON or SSE), and ``serve(cfg)`` running uvicorn."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from codetune.serve.config import ServeConfig
from codetune.serve.serving import OpenAIServing, ServingError, parse

logger = logging.getLogger(__name__)


def build_serving(cfg: ServeConfig, model: Any = None, tokenizer: Any = None) -> OpenAIServing:
    """Load the model (base + adapter, unmerged) and start its engine."""
    from codetune.modeling.loading import default_device, load_model, load_tokenizer, resolve_model
    from codetune.serve.serving import start_engine

    if model is None or tokenizer is None:
        import torch

        ref = resolve_model(cfg.model, cfg.adapter)
        tokenizer = load_tokenizer(ref)
        device = cfg.device or default_device()
        model = load_model(ref, device=device, dtype=torch.float16 if device.startswith("cuda") else None)
    batcher = start_engine(cfg, model, tokenizer)
    return OpenAIServing(cfg, model, tokenizer, batcher)


def create_app(cfg: ServeConfig, serving: OpenAIServing | None = None) -> Any:
    """The FastAPI application; loads the model now unless ``serving`` is given."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    serving = serving or build_serving(cfg)
    app = FastAPI(title="codetune", version="0.1.0")
    app.state.serving = serving

    def error_response(error: ServingError) -> JSONResponse:
        headers = {"Retry-After": "1"} if error.status in (429, 503) else None
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    @app.exception_handler(ServingError)
    async def _serving_error(request: Request, error: ServingError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return error_response(ServingError(error.status_code, str(error.detail), type=kind))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(ServingError(400, str(error.errors()[:3])))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("request failed")
        return error_response(
            ServingError(500, f"internal error: {type(error).__name__}", type="server_error")
        )

    def guard(request: Request) -> None:
        """401 without the key (when one is set), 413 for a declared body over the limit."""
        if cfg.api_key:
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
            if not hmac.compare_digest(token.encode(), cfg.api_key.encode()):
                raise ServingError(401, "missing or wrong API key", code="invalid_api_key")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_body_bytes:
            raise ServingError(413, f"request body over {cfg.max_body_bytes} bytes", code="body_too_large")

    async def body(request: Request) -> bytes:
        guard(request)
        data = b""
        async for part in request.stream():
            data += part
            if len(data) > cfg.max_body_bytes:
                raise ServingError(
                    413, f"request body over {cfg.max_body_bytes} bytes", code="body_too_large"
                )
        return data

    def respond(result: dict[str, Any] | AsyncIterator[str]) -> Any:
        if isinstance(result, dict):
            return JSONResponse(result)
        return StreamingResponse(
            result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        from codetune.serve.protocol import CompletionRequest

        parsed = parse(CompletionRequest, await body(request))
        return respond(await serving.completions(parsed, request.is_disconnected))

    @app.post("/v1/engines/{engine}/completions")
    async def engine_completions(engine: str, request: Request) -> Any:
        """Copilot's and FauxPilot's route: the engine name stands for the model."""
        from codetune.serve.protocol import CompletionRequest

        parsed = parse(CompletionRequest, await body(request))
        parsed.model = parsed.model or engine
        return respond(await serving.completions(parsed, request.is_disconnected))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        from codetune.serve.protocol import ChatCompletionRequest

        parsed = parse(ChatCompletionRequest, await body(request))
        return respond(await serving.chat(parsed, request.is_disconnected))

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        guard(request)
        return serving.models()

    @app.get("/health")
    async def health() -> Any:
        return serving.health()

    @app.get("/copilot_internal/v2/token")
    async def copilot_token(request: Request) -> Any:
        guard(request)
        return serving.copilot_token()

    @app.on_event("shutdown")
    async def _stop() -> None:
        serving.batcher.stop()

    return app


def serve(cfg: ServeConfig) -> None:
    """Load the model and serve until interrupted."""
    import uvicorn

    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.api_key:
        logger.warning("serving on %s without --api-key: anyone who can reach it can use it", cfg.host)
    app = create_app(cfg)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)
