"""The protocol registry: a protocol is one module here and one ``register_protocol`` row.

A protocol's mount function adds its routes through :class:`Mount`. ``post(path, Body)`` reads the
request under the server's guards (key, media type, size, deadline; ``codetune.serve.http``) and
parses it into the protocol's own model (a 400 names the bad field), then hands the parsed body to
the route. The route converts it to typed requests
(:class:`~codetune.generation.request.GenerationRequest`, settings through ``ctx.service.sampling``),
calls the one completion service (``ctx.service.generate``), and writes the answer in its own shape
(JSON, or ``codetune.serve.responses.sse`` / ``ndjson``). Two protocols may share a path (Tabby posts
its body to OpenAI's /v1/completions): the later one claims the bodies it ``accepts``.

Each row names the clients it serves and an example request (path and body) on its main route: the
docs show it, and the test matrix sends it to a real server.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from codetune.serve.http import Guard
from codetune.serve.responses import ERROR_TEXT, STREAM_TYPES, ErrorResponse
from codetune.serve.service import CompletionService

POST_ERRORS = (400, 401, 404, 408, 413, 415, 500, 503)
GET_ERRORS = (401, 500)

PostHandler = Callable[[Any, Any], Awaitable[Any]]
GetHandler = Callable[[Any], Awaitable[Any]]


class ProtocolModel(BaseModel):
    """A request body of one editor protocol: unknown fields are a 400, as the docs list them all."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def one_of(value: str | list[str] | None) -> list[str]:
    """A stop field given as one string or a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


# A route's answer that is an empty body (no Content-Type): Tabby's /v1/events.
EMPTY_ANSWER: dict[str, Any] = {"x-empty-body": True}


def declared_responses(
    codes: tuple[int, ...], stream: str | None = None, answer: type[BaseModel] | dict[str, Any] | None = None
) -> dict[int | str, Any]:
    """OpenAPI responses of a route: errors in OpenAI's shape, the answer's schema (a model or a JSON
    schema), the stream's media type."""
    responses: dict[int | str, Any] = {
        code: {"model": ErrorResponse, "description": ERROR_TEXT[code]} for code in codes
    }
    ok: dict[str, Any] = {"description": "OK", "content": {}}
    if answer is EMPTY_ANSWER:
        responses[200] = {"description": "OK, an empty body"}
        return responses
    if isinstance(answer, type):
        ok["model"] = answer
    else:
        ok["content"]["application/json"] = {"schema": answer or {"type": "object"}}
    if stream == "sse":
        event = {"type": "object", "properties": {"data": {"type": "string"}, "event": {"type": "string"}}}
        ok["content"][STREAM_TYPES[stream]] = {"schema": event}
    elif stream is not None:
        ok["content"][STREAM_TYPES[stream]] = {"schema": {"type": "string"}}
    responses[200] = ok
    return responses


@dataclass(frozen=True)
class Handler:
    """One protocol's body on a POST path, its answer, and the route function that makes it."""

    body: type[BaseModel]
    handle: PostHandler
    answer: type[BaseModel] | dict[str, Any] | None = None
    stream: str | None = None
    accepts: Callable[[bytes], bool] | None = None  # None: the path's own body
    errors: tuple[int, ...] = ()  # statuses it answers besides every POST's (POST_ERRORS)


@dataclass
class Route:
    """A POST path: its own body's handler, then the handlers that claim some bodies on it."""

    path: str
    handlers: list[Handler] = field(default_factory=list)

    @property
    def main(self) -> Handler:
        return next(h for h in self.handlers if h.accepts is None)

    @property
    def claims(self) -> list[Handler]:
        return [h for h in self.handlers if h.accepts is not None]

    @property
    def bodies(self) -> list[type[BaseModel]]:
        """Every body the path takes, its own first (the OpenAPI schema's ``anyOf``)."""
        return [h.body for h in (self.main, *self.claims)]

    @property
    def answers(self) -> list[type[BaseModel]]:
        """Every whole-answer model of the path, its own body's first."""
        return [h.answer for h in (self.main, *self.claims) if isinstance(h.answer, type)]

    def pick(self, raw: bytes) -> Handler:
        """The handler of a raw body: the first claim that accepts it, else the path's own."""
        return next((h for h in self.claims if h.accepts(raw)), self.main)  # type: ignore[misc]


@dataclass
class Mount:
    """What a protocol needs to add its routes: the app, the completion service, the server's guards."""

    app: Any
    service: CompletionService
    guard: Guard
    routes: dict[str, Route] = field(default_factory=dict)

    def post(
        self,
        path: str,
        body: type[BaseModel],
        *,
        stream: str | None = None,
        answer: type[BaseModel] | dict[str, Any] | None = None,
        accepts: Callable[[bytes], bool] | None = None,
        errors: tuple[int, ...] = (),
    ) -> Callable[[PostHandler], PostHandler]:
        """Route decorator: ``handler(request, parsed body)`` for a POST whose JSON body is ``body``,
        streaming as ``stream`` (sse, ndjson); ``answer``: a whole answer's model or JSON schema (an
        object unless given); ``accepts``: on a path another protocol owns, the raw bodies this one takes;
        ``errors``: the statuses it answers besides every POST's. The routes are added to the app by :meth:`install`, once every protocol has mounted."""

        def add(handler: PostHandler) -> PostHandler:
            route = self.routes.setdefault(path, Route(path))
            route.handlers.append(Handler(body, handler, answer, stream, accepts, errors))
            return handler

        return add

    def install(self) -> None:
        """Add each POST path to the app: one endpoint that reads the body and hands it to its handler."""
        for route in self.routes.values():
            main = route.main
            # Path parameters are read from request.path_params; declared here for the OpenAPI schema.
            names = re.findall(r"{(\w+)}", route.path)
            parameters = [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string", "title": n.title()}}
                for n in names
            ]
            errors = sorted({*POST_ERRORS, *(code for h in route.handlers for code in h.errors)})
            responses = declared_responses(tuple(errors), main.stream, main.answer)

            self.app.add_api_route(
                route.path,
                self._endpoint(route),
                methods=["POST"],
                responses=responses,
                # FastAPI gives every other 200 its JSON media type; an empty answer has none
                response_class=Response if main.answer is EMPTY_ANSWER else JSONResponse,
                openapi_extra={"parameters": parameters} if names else None,
            )

    def _endpoint(self, route: Route) -> Callable[[Any], Awaitable[Any]]:
        async def endpoint(request: Request) -> Any:
            raw = await self.guard.read_body(request)
            handler = route.pick(raw)
            return await handler.handle(request, self.guard.parse(handler.body, raw))

        return endpoint

    def get(
        self, path: str, *, guarded: bool = True, answer: type[BaseModel] | None = None
    ) -> Callable[[GetHandler], GetHandler]:
        """Route decorator: ``handler(request)`` for a GET (401 without the key when ``guarded``)."""

        def add(handler: GetHandler) -> GetHandler:
            @self.app.get(path, responses=declared_responses(GET_ERRORS if guarded else (500,), None, answer))
            async def endpoint(request: Request) -> Any:
                if guarded:
                    self.guard.check_key(request)
                return await handler(request)

            return handler

        return add


@dataclass(frozen=True)
class Protocol:
    """A registry row: the mount function, the clients it serves, an example request (path, body)."""

    name: str
    mount: Callable[[Mount], None]
    clients: str
    example: tuple[str, dict[str, Any]]


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(
    name: str, *, clients: str, example: tuple[str, dict[str, Any]]
) -> Callable[[Callable[[Mount], None]], Callable[[Mount], None]]:
    """Decorator: ``mount(ctx)`` adds the protocol's routes through ``ctx``."""

    def add(mount: Callable[[Mount], None]) -> Callable[[Mount], None]:
        if name in PROTOCOLS:
            raise ValueError(f"protocol {name!r} registered twice")
        PROTOCOLS[name] = Protocol(name, mount, clients, example)
        return mount

    return add
