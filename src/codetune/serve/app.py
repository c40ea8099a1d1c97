"""The app: the completion service, every registered protocol's routes mounted over it, and
``serve(cfg)`` running uvicorn.

Each protocol (``codetune.serve.protocols``) adds its own routes; every request is read under the
server's guards (``codetune.serve.http``) and every error is answered in OpenAI's shape
(``codetune.serve.responses``). ``/openapi.json`` declares every body and error.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import threading
from typing import Any

import uvicorn
from fastapi import Request

from codetune.errors import InputError
from codetune.serve import admin, feedback
from codetune.serve.config import ServeConfig
from codetune.serve.http import Guard, header_timeout_protocol
from codetune.serve.protocols import PROTOCOLS, Mount
from codetune.serve.recording import CallerAgent, ContinueFollower, Recorder
from codetune.serve.responses import ServingError, error_response
from codetune.serve.service import CompletionService, start_engine

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


def build_service(cfg: ServeConfig, model: Any = None, tokenizer: Any = None) -> CompletionService:
    """Load the model (base + adapter, or base + named adapters, unmerged) and start its engine."""
    from codetune.modeling import loading

    if cfg.engine == "llamacpp":
        return CompletionService(cfg, None, *_llama_cpp(cfg))
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
    return CompletionService(cfg, model, tokenizer, start_engine(cfg, model, tokenizer))


def _llama_cpp(cfg: ServeConfig) -> tuple[Any, Any]:
    """The GGUF's tokenizer and a started llama.cpp engine over the file."""
    from pathlib import Path

    from codetune.errors import ConfigError
    from codetune.generation.engines import load_engine
    from codetune.modeling.gguf import checked_sha256, find_gguf, gguf_tokenizer, read_info

    path = Path(cfg.model).expanduser()
    gguf = find_gguf(path) if path.exists() else None
    if gguf is None:
        raise ConfigError(
            f"engine llamacpp needs --model to be a GGUF file (or a folder with one): {cfg.model}"
        )
    checked_sha256(gguf)
    info = read_info(gguf)
    tokenizer = gguf_tokenizer(info)
    engine = load_engine(
        "llamacpp",
        info,
        tokenizer,
        device=cfg.device,
        context=cfg.context_length,
        threads=cfg.threads,
        max_queue=cfg.max_queue,
    )
    engine.start()
    return tokenizer, engine


def create_app(cfg: ServeConfig, service: CompletionService | None = None) -> Any:
    """The FastAPI application; loads the model now unless ``service`` is given."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    # The records' history is read (and --min-confidence auto fitted) before the model loads: a bad
    # folder should not cost a model load.
    recorder = Recorder.start(
        cfg.record,
        cfg.min_confidence,
        keep_accepted=cfg.min_confidence_keep,
        cut_spec=cfg.cut_below,
        max_bytes=cfg.record_max_bytes,
        when_full=cfg.record_when_full,
        join_outcomes=cfg.continue_log is not None,
    )
    for line in recorder.describe():
        logger.warning(line)
    service = service or build_service(cfg)
    service.recorder = recorder
    redact_server_logs()
    app = FastAPI(title="codetune", version="0.1.0")
    app.state.service = service
    if recorder.active:
        app.add_middleware(CallerAgent)
    if cfg.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cfg.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Api-Key"],
        )

    @app.exception_handler(ServingError)
    async def _serving_error(request: Request, error: ServingError) -> Any:
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Any:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return error_response(ServingError(error.status_code, str(error.detail), type=kind))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> Any:
        return error_response(ServingError(400, str(error.errors()[:3])))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Any:
        logger.exception("request failed")
        return error_response(
            ServingError(500, f"internal error: {type(error).__name__}", type="server_error")
        )

    ctx = Mount(app, service, Guard(cfg))
    for protocol in PROTOCOLS.values():
        protocol.mount(ctx)
    feedback.mount(ctx)
    admin.mount(ctx)
    ctx.install()
    app.openapi = lambda: _openapi(app, ctx)

    follower = ContinueFollower(recorder, cfg.continue_log, cfg.continue_poll_s) if cfg.continue_log else None

    @app.on_event("startup")
    async def _follow() -> None:
        if follower is not None:
            follower.start()

    @app.on_event("shutdown")
    async def _stop() -> None:
        service.engine.stop()
        if follower is not None:
            follower.stop()
        recorder.close()

    return app


def _openapi(app: Any, ctx: Mount) -> dict[str, Any]:
    """FastAPI's schema plus each POST path's bodies and answers (routes read bodies raw, to answer
    408/413/415; a path two protocols share offers both bodies and both answers)."""
    from fastapi.openapi.utils import get_openapi

    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})

    def ref(model_cls: Any, mode: str = "validation") -> dict[str, str]:
        model_schema = model_cls.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
        components.update(model_schema.pop("$defs", {}))
        components[model_cls.__name__] = model_schema
        return {"$ref": f"#/components/schemas/{model_cls.__name__}"}

    def one(refs: list[dict[str, Any]]) -> dict[str, Any]:
        return refs[0] if len(refs) == 1 else {"anyOf": refs}

    for path, route in ctx.routes.items():
        operation = schema["paths"][path]["post"]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": one([ref(m) for m in route.bodies])}},
        }
        if len(route.answers) > 1:
            answer = operation["responses"]["200"]["content"]["application/json"]
            answer["schema"] = {
                "anyOf": [answer["schema"], *(ref(m, "serialization") for m in route.answers[1:])]
            }
    for operations in schema["paths"].values():
        for operation in operations.values():
            operation["responses"].pop("422", None)  # validation errors are 400s in OpenAI's shape
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema


def server_config(cfg: ServeConfig, app: Any) -> uvicorn.Config:
    """uvicorn's settings for ``app``: the server's own HTTP protocol (a header deadline), its log
    level and its shutdown grace."""
    return uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=cfg.log_level,
        timeout_graceful_shutdown=cfg.shutdown_timeout_s,
        http=header_timeout_protocol(cfg.header_timeout_s),
    )


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use is one error before the model loads, not after."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise InputError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        hint = " (another server? pick another --port)" if error.errno == errno.EADDRINUSE else ""
        raise InputError(f"cannot listen on {host}:{port}: {error.strerror}{hint}") from None
    sock.set_inheritable(True)
    return sock


def describe(app: Any, cfg: ServeConfig) -> list[str]:
    """What the server says at start-up: the model ids it answers to, its routes, its repositories."""
    service = app.state.service
    adapters = f"; adapters: {', '.join(service.adapters)}" if service.adapters else ""
    aliases = f" (also answers to {', '.join(cfg.model_aliases)})" if cfg.model_aliases else ""
    lines = [f"model: {service.name}{aliases}{adapters}"]
    routes: dict[str, list[str]] = {}
    for route in app.routes:
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD" and route.path not in (
                "/openapi.json",
                "/docs",
                "/redoc",
                "/docs/oauth2-redirect",
            ):
                routes.setdefault(method, []).append(route.path)
    for method, paths in sorted(routes.items()):
        lines.append(f"routes ({method}): {' '.join(paths)}")
    key = "every route but /health (liveness only) and /api/version" if cfg.api_key else "none"
    lines.append(f"API key required on: {key}")
    if service.repos is not None:
        for repo in service.repos.repos:
            skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(repo.skipped.items()))
            lines.append(
                f"repository {repo.name} ({repo.root}): {len(repo.stamps)} files indexed"
                + (f"; left out: {skipped}" if skipped else "")
            )
    return lines


def serve(cfg: ServeConfig, app: Any = None) -> None:
    """Bind the port, load the model (unless ``app`` is given) and serve until SIGINT/SIGTERM."""
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.api_key:
        logger.warning(
            "serving on %s without an API key (CODETUNE_API_KEY): anyone who can reach it can use it",
            cfg.host,
        )
    sock = bind(cfg.host, cfg.port)
    try:
        app = app or create_app(cfg)
        config = server_config(cfg, app)
        redact_server_logs()
        startup = logging.getLogger("uvicorn.error")
        for line in describe(app, cfg):
            startup.info(line)
        _BoundedShutdownServer(config).run(sockets=[sock])
    finally:
        sock.close()


class _BoundedShutdownServer(uvicorn.Server):
    """uvicorn's Server whose shutdown cannot hang: a stuck request or engine is cut off."""

    armed = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if sockets is not None and self.started:  # bound before the model loaded: say where, as uvicorn does
            self._log_started_message(sockets)

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
