"""Thin FastAPI routes over OpenAIServing (JSON or SSE), and ``serve(cfg)`` running uvicorn.

The HTTP layer guards the engine: the API key (401), JSON bodies only (415, so that a web page
cannot post a "simple" cross-site request), a body size (413) and a deadline for the whole body
(408, against slow clients), JSON too deep to parse (400), and no request that asks for more
sequences than the queue can ever hold (400). ``/openapi.json`` declares every body and error.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import threading
from typing import Any

import uvicorn
from fastapi import Request

from codetune.serve.config import ServeConfig
from codetune.serve.protocols import mount_protocols, tabby
from codetune.serve.protocols.base import respond
from codetune.serve.serving import OpenAIServing, ServingError, parse

logger = logging.getLogger(__name__)

# Query parameters that may carry a secret; their values never reach a log line.
_SECRET_QUERY = re.compile(r"([?&](?:api[_-]?key|key|token|access[_-]token|auth)=)[^&\s\"]*", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Replaces ``?api_key=...`` (and token, key, ...) values in log records (uvicorn's access log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_QUERY.sub(r"\1REDACTED", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _SECRET_QUERY.sub(r"\1REDACTED", record.msg)
        return True


def redact_server_logs() -> None:
    """Attach RedactSecrets to uvicorn's loggers (once)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())


def build_serving(cfg: ServeConfig, model: Any = None, tokenizer: Any = None) -> OpenAIServing:
    """Load the model (base + adapter, or base + named adapters, unmerged) and start its engine."""
    from codetune.modeling import loading
    from codetune.serve.serving import start_engine

    if model is None or tokenizer is None:
        import torch

        device = cfg.device or loading.default_device()
        dtype = torch.float16 if device.startswith("cuda") else None
        if cfg.adapters:
            ref, folders = loading.resolve_adapters(cfg.model, cfg.adapters)
            tokenizer = loading.load_tokenizer(ref)
            model = loading.load_with_adapters(ref, folders, device=device, dtype=dtype)
        else:
            ref = loading.resolve_model(cfg.model, cfg.adapter)
            tokenizer = loading.load_tokenizer(ref)
            model = loading.load_model(ref, device=device, dtype=dtype)
    batcher = start_engine(cfg, model, tokenizer)
    return OpenAIServing(cfg, model, tokenizer, batcher)


_POST_ERRORS = (400, 401, 404, 408, 413, 415, 500, 503)
_GET_ERRORS = (401, 500)
_ERROR_TEXT = {
    400: "Invalid request (OpenAI error body).",
    401: "Missing or wrong API key.",
    404: "No such model (the request's `model` names none of /v1/models).",
    408: "The request body did not arrive in time.",
    413: "Request body too large.",
    415: "Content-Type is not application/json.",
    500: "Internal error.",
    503: "Queue full; retry later.",
}


def _responses(codes: tuple[int, ...], ok_model: Any = None, stream: bool = False) -> dict[int, Any]:
    from codetune.serve.protocol import ErrorResponse

    responses: dict[int, Any] = {
        code: {"model": ErrorResponse, "description": _ERROR_TEXT[code]} for code in codes
    }
    if ok_model is not None:
        responses[200] = {"model": ok_model, "description": "OK"}
        if stream:
            # one server-sent event: `data: <JSON chunk>` (or `data: [DONE]`)
            event = {
                "type": "object",
                "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
            }
            responses[200]["content"] = {"text/event-stream": {"schema": event}}
    return responses


def create_app(cfg: ServeConfig, serving: OpenAIServing | None = None) -> Any:
    """The FastAPI application; loads the model now unless ``serving`` is given."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from codetune.serve.protocol import (
        ChatCompletionRequest,
        ChatCompletionResponse,
        CompletionRequest,
        CompletionResponse,
        ModelList,
    )

    serving = serving or build_serving(cfg)
    redact_server_logs()
    app = FastAPI(title="codetune", version="0.1.0")
    app.state.serving = serving
    if cfg.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cfg.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Api-Key"],
        )

    def error_response(error: ServingError) -> JSONResponse:
        headers = {"Retry-After": "1"} if error.status in (429, 503) else {}
        if error.status == 408:
            headers["Connection"] = "close"  # the rest of the body is not worth waiting for
        return JSONResponse(error.body(), status_code=error.status, headers=headers or None)

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
        """401 without the key (when one is set)."""
        if cfg.api_key:
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
            if not hmac.compare_digest(token.encode(), cfg.api_key.encode()):
                raise ServingError(401, "missing or wrong API key", code="invalid_api_key")

    async def read_body(request: Request) -> bytes:
        """The body: JSON only (415), within max_body_bytes (413), all of it within body_timeout_s (408)."""
        guard(request)
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise ServingError(
                415,
                f"Content-Type must be application/json, not {media_type or 'missing'}",
                code="unsupported_media_type",
            )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_body_bytes:
            raise ServingError(413, f"request body over {cfg.max_body_bytes} bytes", code="body_too_large")

        async def receive() -> bytes:
            parts, size = [], 0
            async for part in request.stream():
                parts.append(part)
                size += len(part)
                if size > cfg.max_body_bytes:
                    raise ServingError(
                        413, f"request body over {cfg.max_body_bytes} bytes", code="body_too_large"
                    )
            return b"".join(parts)

        try:
            return await asyncio.wait_for(receive(), timeout=cfg.body_timeout_s)
        except asyncio.TimeoutError:
            raise ServingError(
                408, f"request body not received within {cfg.body_timeout_s:g} s", code="body_timeout"
            ) from None

    async def read_request(request: Request, model_cls: type, body: bytes | None = None) -> Any:
        body = await read_body(request) if body is None else body
        try:
            parsed = parse(model_cls, body)
        except RecursionError:
            raise ServingError(400, "malformed JSON body: nested too deeply", code="invalid_json") from None
        if parsed.sequence_count() > cfg.max_queue:
            raise ServingError(
                400,
                f"this request asks for {parsed.sequence_count()} sequences (n x prompts); "
                f"this server queues at most {cfg.max_queue}",
                param="n",
                code="too_many_sequences",
            )
        return parsed

    post_errors = _responses(_POST_ERRORS, CompletionResponse, stream=True)
    chat_errors = _responses(_POST_ERRORS, ChatCompletionResponse, stream=True)

    @app.post("/v1/completions", responses=post_errors)
    async def completions(request: Request) -> Any:
        raw = await read_body(request)
        if tabby.is_tabby(raw):  # Tabby's plugins share this path; their body has `segments`
            return await tabby.complete(app.state.tabby, request, raw)
        parsed = await read_request(request, CompletionRequest, raw)
        return respond(await serving.completions(parsed, request.is_disconnected))

    @app.post("/v1/chat/completions", responses=chat_errors)
    async def chat(request: Request) -> Any:
        parsed = await read_request(request, ChatCompletionRequest)
        return respond(await serving.chat(parsed, request.is_disconnected))

    @app.get("/v1/models", responses=_responses(_GET_ERRORS, ModelList))
    async def models(request: Request) -> Any:
        guard(request)
        return serving.models()

    @app.get("/health", responses=_responses((500,)))
    async def health() -> Any:
        return serving.health()

    # Ollama, llama.cpp, TGI, Tabby, Mistral FIM and Copilot: one adapter each (serve/protocols/).
    protocol_bodies = mount_protocols(app, serving, read_body, guard, read_request)
    # Tabby's plugins post their own body (`segments`) to OpenAI's path: either one is valid there.
    bodies: dict[str, Any] = {
        "/v1/completions": (CompletionRequest, tabby.TabbyCompletionRequest),
        "/v1/chat/completions": ChatCompletionRequest,
        **protocol_bodies,
    }

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus the request bodies (routes read them raw, to answer 408/413/415)."""
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})

        def ref(model_cls: Any, mode: str = "validation") -> dict[str, str]:
            model_schema = model_cls.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
            components.update(model_schema.pop("$defs", {}))
            components[model_cls.__name__] = model_schema
            return {"$ref": f"#/components/schemas/{model_cls.__name__}"}

        for path, models in bodies.items():
            refs = [ref(m) for m in (models if isinstance(models, tuple) else (models,))]
            schema["paths"][path]["post"]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[0] if len(refs) == 1 else {"anyOf": refs}}},
            }
        answer = schema["paths"]["/v1/completions"]["post"]["responses"]["200"]["content"]["application/json"]
        answer["schema"] = {"anyOf": [answer["schema"], ref(tabby.TabbyCompletionResponse, "serialization")]}
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation["responses"].pop("422", None)  # validation errors are 400s in OpenAI's shape
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi

    @app.on_event("shutdown")
    async def _stop() -> None:
        serving.batcher.stop()

    return app


def serve(cfg: ServeConfig, app: Any = None) -> None:
    """Load the model (unless ``app`` is given) and serve until SIGINT/SIGTERM."""
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.api_key:
        logger.warning(
            "serving on %s without an API key (CODETUNE_API_KEY): anyone who can reach it can use it",
            cfg.host,
        )
    app = app or create_app(cfg)
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=cfg.log_level,
        timeout_graceful_shutdown=cfg.shutdown_timeout_s,
    )
    redact_server_logs()
    _BoundedShutdownServer(config).run()


class _BoundedShutdownServer(uvicorn.Server):
    """uvicorn's Server whose shutdown cannot hang: a stuck request or engine is cut off."""

    armed = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if not self.armed:
            self.armed = True
            # Requests get timeout_graceful_shutdown; the engine's stop a few seconds more.
            grace = (self.config.timeout_graceful_shutdown or 0) + 3
            timer = threading.Timer(grace, _force_exit, args=(grace,))
            timer.daemon = True
            timer.start()


def _force_exit(grace: float) -> None:
    logger.error("shutdown still running after %.0f s (a stuck generation?): exiting now", grace)
    logging.shutdown()
    os._exit(1)
