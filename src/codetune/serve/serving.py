"""The server's logic: validate a request, queue its sequences, and build a response or a typed error."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from codetune.generation.engines import Engine, QueueFull, engine_for
from codetune.generation.params import InvalidParams
from codetune.generation.request import Request, RequestError, build_request
from codetune.generation.sequence import Sequence, context_length, is_seq2seq
from codetune.serve.config import ServeConfig
from codetune.serve.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatMessageOut,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    ErrorBody,
    ErrorResponse,
    ModelCard,
    ModelList,
    Usage,
)
from codetune.serve.repos import EditorContext

Disconnected = Callable[[], Awaitable[bool]]


class ServingError(Exception):
    """An error for the client: HTTP status + OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        error = ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=error).model_dump()


def validation_error(error: ValidationError) -> ServingError:
    """A 400 naming the first bad field."""
    first = error.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    messages = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()[:5]
    )
    return ServingError(400, messages, param=param, code="invalid_value")


def parse(model_cls: type, body: bytes) -> Any:
    """Parse a JSON body into a request model, or raise a 400."""
    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ServingError(400, f"malformed JSON body: {error}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ServingError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return model_cls.model_validate(data)
    except ValidationError as error:
        raise validation_error(error) from None


def start_engine(cfg: ServeConfig, model: Any, tokenizer: Any) -> Engine:
    """The engine that serves ``cfg`` (continuous batching unless micro is asked or the model is seq2seq)."""
    engine = engine_for(
        model,
        tokenizer,
        "continuous" if cfg.batching == "continuous" else "static",
        max_batch_size=cfg.max_batch_size,
        wait_s=cfg.batch_wait_ms / 1000,
        regroup_s=cfg.batch_regroup_ms / 1000,
        max_queue=cfg.max_queue,
        kv_token_budget=cfg.kv_token_budget,
        fused_prefill_tokens=cfg.fused_prefill_tokens,
        prefix_cache=cfg.prefix_cache,
        prefix_cache_mb=cfg.prefix_cache_mb,
    )
    engine.start()
    return engine


def _language(request: Any) -> str | None:
    """The language an editor names (``language``, or Copilot's ``extra.language``), if any."""
    extra = getattr(request, "extra", None)
    value = getattr(request, "language", None) or (extra.get("language") if isinstance(extra, dict) else None)
    return value if isinstance(value, str) and len(value) < 40 else None


def _nwo(request: Any) -> str | None:
    """The repository Copilot names, ``nwo`` ("name with owner": ``owner/name``), if any.

    Copilot-compatible completion APIs carry it beside ``extra`` (e.g. KittyCAD/kittycad.py,
    kittycad/models/kcl_code_completion_request.py: ``nwo``, ``extra: {language, next_indent,
    trim_by_indentation, prompt_tokens, suffix_tokens}``, ``prompt``, ``suffix``).
    """
    value = getattr(request, "nwo", None)
    return value if isinstance(value, str) and 0 < len(value) < 300 else None


class OpenAIServing:
    """Completions, chat, models and health over one model and its engine."""

    def __init__(self, cfg: ServeConfig, model: Any, tokenizer: Any, batcher: Engine) -> None:
        self.cfg, self.model, self.tokenizer, self.batcher = cfg, model, tokenizer, batcher
        self.name = cfg.served_name or cfg.model
        # Named adapters over the one base (vLLM's multi-LoRA convention: `model` picks one).
        self.adapters: list[str] = list(cfg.adapters)
        self.context = cfg.context_length or context_length(model) or 2048
        self.started = time.time()
        self.repos = None
        if cfg.repos:
            from codetune.serve.repos import ServedRepos

            self.repos = ServedRepos(cfg.repos, refresh_s=cfg.repo_refresh_s)
        # A newer request from the same client cancels its older one still running (keystrokes).
        self._clients: dict[str, list[Sequence]] = {}

    # -- models ---------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """The base's served name, then each adapter's."""
        return [self.name, *self.adapters]

    def adapter_for(self, model: str | None) -> str | None:
        """The adapter a request's ``model`` names (None: the base); 404 for a name this server lacks.

        A server without named adapters answers to any name, as editors send fixed ones
        (``codestral-latest``, Copilot's engine).
        """
        if not self.adapters or not model or model == self.name:
            return None
        if model in self.adapters:
            return model
        raise ServingError(
            404,
            f"model {model!r} does not exist; this server has: {', '.join(self.model_names())}",
            type="not_found_error",
            param="model",
            code="model_not_found",
        )

    def use_adapter(self, seqs: list[Sequence], model: str | None) -> None:
        """Tag rows with the adapter ``model`` names, when adapters are served (404 for an unknown one)."""
        adapter = self.adapter_for(model)
        if self.adapters:
            for seq in seqs:
                seq.adapter = adapter or "__base__"

    # -- small routes ---------------------------------------------------------------------------
    def models(self) -> dict[str, Any]:
        cards = [ModelCard(id=self.name)]
        cards += [
            ModelCard(id=name, root=str(self.cfg.adapters[name]), parent=self.name) for name in self.adapters
        ]
        return ModelList(data=cards).model_dump()

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.name,
            **({"adapters": self.adapters} if self.adapters else {}),
            "uptime_s": round(time.time() - self.started, 1),
            **self.batcher.stats(),
        }

    def copilot_token(self) -> dict[str, Any]:
        now = int(time.time())
        return {"token": f"codetune-{uuid.uuid4().hex[:16]}", "expires_at": now + 3600, "refresh_in": 1500}

    # -- shared ---------------------------------------------------------------------------------
    def _check(self, request: Any) -> None:
        if request.logit_bias:
            raise ServingError(400, "logit_bias is not supported", param="logit_bias")
        if getattr(request, "best_of", None) not in (None, request.n):
            raise ServingError(400, "best_of is not supported (use n)", param="best_of")
        if request.max_tokens is not None and request.max_tokens > self.cfg.max_tokens_limit:
            raise ServingError(
                400,
                f"max_tokens is {request.max_tokens}; this server allows at most {self.cfg.max_tokens_limit}",
                param="max_tokens",
            )

    def _params(self, request: Any, extra_stop: list[str] | None = None) -> Any:
        try:
            params = request.to_sampling_params(self.cfg.default_max_tokens, extra_stop)
            params.check()
        except InvalidParams as error:
            raise ServingError(400, str(error), param=error.field, code="invalid_value") from None
        except (ValueError, TypeError, OverflowError) as error:
            raise ServingError(400, str(error), code="invalid_value") from None
        return params

    def _request(self, prompt: str | list[int], suffix: str | None, params: Any, **options: Any) -> Request:
        """The one request builder, with this server's context, trimming and FIM settings."""
        try:
            return build_request(
                self.tokenizer,
                prompt,
                suffix,
                params,
                context=self.context,
                seq2seq=is_seq2seq(self.model),
                prefix_ratio=self.cfg.fim_prefix_ratio,
                strict_fim=self.cfg.strict_fim,
                **options,
            )
        except RequestError as error:
            raise ServingError(400, str(error), param=error.param, code=error.code) from None

    def _claim(self, client: str | None, seqs: list[Sequence]) -> None:
        if client is None:
            return
        # Through the engine: counted, and their slots free for the newer request at once.
        self.batcher.cancel([older for older in self._clients.get(client, []) if not older.done])
        self._clients[client] = seqs

    def _forget(self, client: str | None, seqs: list[Sequence]) -> None:
        if client is not None and self._clients.get(client) is seqs:
            del self._clients[client]

    async def _run(
        self,
        seqs: list[Sequence],
        disconnected: Disconnected | None,
        *,
        stream: bool = False,
        client: str | None = None,
    ) -> AsyncIterator[tuple[str, int, str]]:
        """Queue sequences and yield ("text", i, delta) and ("done", i, "") events; cancel on exit.

        ``client`` (a user, slot or client id): a newer request of the same client cancels this one.
        """
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, int, str]] = asyncio.Queue()
        for i, seq in enumerate(seqs):
            if stream:
                # Only streams wake the event loop per token; others just wait for the end.
                seq.on_text = lambda delta, i=i: loop.call_soon_threadsafe(
                    events.put_nowait, ("text", i, delta)
                )
            seq.on_done = lambda s, i=i: loop.call_soon_threadsafe(events.put_nowait, ("done", i, ""))
        self._claim(client, seqs)
        try:
            self.batcher.submit(seqs)
        except QueueFull as error:
            self._forget(client, seqs)
            raise ServingError(
                503, f"server busy: {error}; retry later", type="server_error", code="queue_full"
            ) from None
        remaining = len(seqs)
        try:
            while remaining:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=0.25)
                except asyncio.TimeoutError:
                    if disconnected is not None and await disconnected():
                        return
                    continue
                if event[0] == "done":
                    remaining -= 1
                    error = seqs[event[1]].error
                    if error and error.startswith("PatternTimeout"):
                        raise ServingError(
                            400, error, param="truncate_before_pattern", code="pattern_timeout"
                        )
                    if error:
                        raise ServingError(500, f"generation failed: {error}", type="server_error")
                yield event
        finally:
            self._forget(client, seqs)
            self.batcher.cancel([s for s in seqs if not s.done] or [])
            for seq in seqs:
                self.batcher.release(seq)

    # -- repository context -----------------------------------------------------------------------
    async def refresh_repos(self) -> None:
        """Pick up changed files of the ``--repo`` repositories, indexing in a worker thread: the event
        loop keeps answering other requests, which get the old index until the new one is ready."""
        if self.repos is not None:
            await self.repos.refreshed()

    def _repo_context(
        self, filepath: str | None, prefix: str, suffix: str, editor: EditorContext | None
    ) -> Any:
        """The context for one cursor (the editor's snippets, then the --repo index), or None."""
        from codetune.context import ContextOptions, RepoContext, build_context

        editor = editor or EditorContext()
        if (
            self.cfg.context_tokens == 0
            or not editor.retrieve
            or (self.repos is None and not editor.snippets)
        ):
            return None

        def count(text: str) -> int:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

        options = ContextOptions(budget_tokens=self.cfg.context_tokens)
        if self.repos is None:
            target, name = filepath or "", ""
            snippets = build_context(
                None,
                target,
                prefix,
                suffix,
                count_tokens=count,
                options=options,
                client_snippets=editor.snippets,
            )
        else:
            snippets, target, name = self.repos.context(
                filepath, prefix, suffix, count_tokens=count, options=options,
                client_snippets=editor.snippets, repo=editor.repo, hints=editor.hints,
            )  # fmt: skip
        return RepoContext(tuple(snippets), target_path=target, repo_name=name) if snippets else None

    def debug_data(self, built: Request, options: Any) -> dict[str, Any]:
        """Tabby's ``debug_data``: the context snippets kept in the prompt, and the prompt the model got."""
        data: dict[str, Any] = {}
        if options.return_snippets:
            kept = list(getattr(built, "context_snippets", None) or [])
            # Tabby's {filepath, body, score}, in prompt order (the builder's order of trust: the editor's
            # snippets, imports, definitions, then BM25 chunks best first), `rank` being that position.
            # `score` is what the snippet's source measured: the BM25 score of a retrieved chunk, the
            # editor's own score of a snippet it sent; 0 for imports and definitions, which are found
            # by name, not ranked (Tabby types score as a float, so no null). Scores of different
            # sources are not comparable: `source` says which one a snippet has.
            data["snippets"] = [
                {
                    "filepath": s.path,
                    "body": s.text,
                    "score": 0.0 if s.score is None else round(s.score, 4),
                    "rank": i,
                    "source": s.source,
                }
                for i, s in enumerate(kept)
            ]
        if options.return_prompt:
            data["prompt"] = built.prompt_text
        return data

    # -- completions ----------------------------------------------------------------------------
    def _completion_requests(
        self, request: CompletionRequest, editor: EditorContext | None = None
    ) -> list[Request]:
        self._check(request)
        params = self._params(request)
        prompts = request.prompt
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not prompts:
            prompts = [""]
        postprocess = self.cfg.postprocess if request.postprocess is None else request.postprocess
        language = _language(request)
        if editor is None and (nwo := _nwo(request)):
            editor = EditorContext(repo=nwo)
        if request.debug_options and request.debug_options.disable_retrieval_augmented_code_completion:
            editor = EditorContext(retrieve=False)
        built = []
        for prompt in prompts:
            options: dict[str, Any] = {"postprocess": postprocess, "language": language}
            if isinstance(prompt, str):
                context = self._repo_context(request.filepath, prompt, request.suffix or "", editor)
                if context is not None:
                    options["repo_context"] = context
            built.append(self._request(prompt, request.suffix, params, **options))
        return built

    @staticmethod
    def _annotate(body: dict[str, Any], requests: list[Request]) -> dict[str, Any]:
        """Add what was kept of each prompt to ``usage``, and any warning."""
        if body.get("usage") is not None:
            details = [r.usage_details() for r in requests]
            for key in (
                "prompt_tokens_sent",
                "prompt_tokens_kept",
                "prefix_tokens_dropped",
                "suffix_tokens_dropped",
            ):
                body["usage"][key] = sum(d[key] for d in details)
            body["usage"]["truncated"] = any(d["truncated"] for d in details)
            for key in ("context_snippets_kept", "context_snippets_dropped"):
                if any(key in d for d in details):
                    body["usage"][key] = sum(d.get(key, 0) for d in details)
        warnings = sorted({r.warning for r in requests if r.warning})
        if warnings:
            body["warning"] = "; ".join(warnings)
        return body

    def _logprobs(self, seq: Sequence, offset: int) -> CompletionLogprobs | None:
        if seq.params.logprobs is None:
            return None
        tokens = [self.tokenizer.decode([t]) for t in seq.tokens]
        offsets, position = [], offset
        for token in tokens:
            offsets.append(position)
            position += len(token)
        return CompletionLogprobs(
            tokens=tokens,
            token_logprobs=seq.token_logprobs,
            top_logprobs=seq.top_logprobs if seq.params.logprobs else None,
            text_offset=offsets,
        )

    @staticmethod
    def _reason(seq: Sequence) -> str:
        # "cancelled": a newer request of the same `user` took over (the text is what was ready)
        return seq.finish_reason if seq.finish_reason in ("length", "cancelled") else "stop"

    def _usage(self, seqs: list[Sequence]) -> Usage:
        prompt = sum(len(s.prompt_ids) for s in seqs[:: max(seqs[0].params.n, 1)]) if seqs else 0
        completion = sum(len(s.tokens) for s in seqs)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    async def completions(
        self, request: CompletionRequest, disconnected: Disconnected | None = None
    ) -> dict[str, Any] | AsyncIterator[str]:
        """A completion response, or (stream) an iterator of SSE lines."""
        await self.refresh_repos()
        requests = self._completion_requests(request)
        seqs = [seq for r in requests for seq in r.new_sequences()]
        self.use_adapter(seqs, request.model)
        texts = [r.text for r in requests for _ in r.sequences]
        model = request.model or self.name
        client = f"completions:{request.user}" if request.user else None
        if request.stream:
            return await self._stream_completions(request, requests, seqs, texts, model, disconnected, client)
        async for _ in self._run(seqs, disconnected, client=client):
            pass
        choices = []
        for i, (seq, text) in enumerate(zip(seqs, texts)):
            prefix = text if request.echo else ""
            choices.append(
                CompletionChoice(
                    text=prefix + seq.text,
                    index=i,
                    logprobs=self._logprobs(seq, len(prefix)),
                    finish_reason=self._reason(seq),
                )
            )
        body = CompletionResponse(model=model, choices=choices, usage=self._usage(seqs)).model_dump(
            exclude_none=False
        )
        if request.debug_options is not None:
            body["debug_data"] = self.debug_data(requests[0], request.debug_options)
        return self._annotate(body, requests)

    async def _stream_completions(
        self,
        request: CompletionRequest,
        requests: list[Request],
        seqs: list[Sequence],
        texts: list[str],
        model: str,
        disconnected: Disconnected | None,
        client: str | None = None,
    ) -> AsyncIterator[str]:
        # Queue before the first byte goes out, so that a full queue is still a plain 503.
        run = self._run(seqs, disconnected, stream=True, client=client)
        first = await _first(run)
        response_id = f"cmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        warning = self._annotate({}, requests).get("warning")
        sent = []

        def chunk(index: int, text: str, reason: str | None) -> str:
            body = {
                "id": response_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": reason}],
            }
            if warning and not sent:
                body["warning"] = warning
            if request.debug_options is not None and not sent:
                body["debug_data"] = self.debug_data(requests[0], request.debug_options)
            sent.append(1)
            return f"data: {json.dumps(body)}\n\n"

        async def events() -> AsyncIterator[str]:
            try:
                if request.echo:
                    for i, text in enumerate(texts):
                        yield chunk(i, text, None)
                pending = [first] if first is not None else []
                async for event in _chain(pending, run):
                    kind, i, delta = event
                    if kind == "text" and delta:
                        yield chunk(i, delta, None)
                    elif kind == "done":
                        yield chunk(i, "", self._reason(seqs[i]))
                include_usage = bool((request.stream_options or {}).get("include_usage"))
                if include_usage:
                    body = {
                        "id": response_id,
                        "object": "text_completion",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": self._usage(seqs).model_dump(),
                    }
                    self._annotate(body, requests)
                    yield f"data: {json.dumps(body)}\n\n"
                yield "data: [DONE]\n\n"
            except ServingError as error:
                yield f"data: {json.dumps(error.body())}\n\n"
            finally:
                await run.aclose()

        return events()

    # -- chat -----------------------------------------------------------------------------------
    async def chat(
        self, request: ChatCompletionRequest, disconnected: Disconnected | None = None
    ) -> dict[str, Any] | AsyncIterator[str]:
        """A chat completion (chat template, else a plain one), or an SSE iterator."""
        from codetune.generation.request import chat_prompt

        self._check(request)
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        try:
            prompt, stops = chat_prompt(self.tokenizer, messages)
        except Exception as error:
            raise ServingError(400, f"cannot apply the chat template: {error}", param="messages") from None
        params = self._params(request, stops)
        params.logprobs = None
        built = self._request(prompt, None, params)
        seqs = built.new_sequences()
        self.use_adapter(seqs, request.model)
        model = request.model or self.name
        client = f"chat:{request.user}" if request.user else None
        if request.stream:
            return await self._stream_chat(seqs, model, disconnected, client)
        async for _ in self._run(seqs, disconnected, client=client):
            pass
        choices = [
            ChatChoice(index=i, message=ChatMessageOut(content=s.text), finish_reason=self._reason(s))
            for i, s in enumerate(seqs)
        ]
        body = ChatCompletionResponse(model=model, choices=choices, usage=self._usage(seqs)).model_dump()
        return self._annotate(body, [built])

    async def _stream_chat(
        self, seqs: list[Sequence], model: str, disconnected: Disconnected | None, client: str | None = None
    ) -> AsyncIterator[str]:
        run = self._run(seqs, disconnected, stream=True, client=client)
        first = await _first(run)
        response_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"

        def chunk(index: int, delta: ChatDelta, reason: str | None = None) -> str:
            body = ChatCompletionChunk(
                id=response_id,
                model=model,
                choices=[ChatChunkChoice(index=index, delta=delta, finish_reason=reason)],
            )
            return f"data: {body.model_dump_json(exclude_none=True)}\n\n"

        async def events() -> AsyncIterator[str]:
            try:
                for i in range(len(seqs)):
                    yield chunk(i, ChatDelta(role="assistant", content=""))
                async for kind, i, delta in _chain([first] if first is not None else [], run):
                    if kind == "text" and delta:
                        yield chunk(i, ChatDelta(content=delta))
                    elif kind == "done":
                        yield chunk(i, ChatDelta(), self._reason(seqs[i]))
                yield "data: [DONE]\n\n"
            except ServingError as error:
                yield f"data: {json.dumps(error.body())}\n\n"
            finally:
                await run.aclose()

        return events()


async def _first(run: AsyncIterator[Any]) -> Any:
    """The first event (so that queueing errors surface before streaming starts), or None."""
    try:
        return await run.__anext__()
    except StopAsyncIteration:
        return None


async def _chain(head: list[Any], rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    for item in head:
        yield item
    async for item in rest:
        yield item
