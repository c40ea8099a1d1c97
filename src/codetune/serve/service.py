"""The one completion service every protocol calls: typed requests in, a running generation out.

A protocol turns its body into :class:`~codetune.generation.request.GenerationRequest` objects (its
settings through :meth:`CompletionService.sampling`) and calls :meth:`CompletionService.generate`,
then writes the :class:`Generation` it gets back in its own shape. Everything between happens here,
once: which adapter a model name picks (404 for none), the repository context of a cursor, the
prompt rules (context length, FIM trimming, tokenized in a worker thread so that a huge prompt never
stalls the event loop), admission to the engine (:meth:`_admit`: each client's fair share of the queue
and of the batch, ``codetune.serve.admission``; a client's newer request cancelling its older one) and
cancelling rows whose client left.
Every finished row is settled once (:meth:`CompletionService.settle`): recorded with the id its client
sees, and withheld (answered empty) below the confidence gate (``codetune.serve.recording``). Which
weights a served name runs with, and rolling out a new adapter, is ``codetune.serve.adapters``'.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.generation.engines import Engine, QueueFull, engine_for
from codetune.generation.generator import Generator
from codetune.generation.params import InvalidParams, SamplingParams
from codetune.generation.request import GenerationRequest, Request, RequestError
from codetune.generation.sequence import Sequence, token_ends
from codetune.serve.adapters import AdapterTable, Swap
from codetune.serve.admission import FairAdmission
from codetune.serve.config import ServeConfig
from codetune.serve.http import Caller
from codetune.serve.recording import CALLER, Recorder
from codetune.serve.repos import EditorContext
from codetune.serve.responses import ServingError

# A record's token trace covers a suggestion's first tokens only: it is built on the event loop, and an
# editor's suggestion is far shorter (a cut further on is not made).
TRACED_TOKENS = 512

Disconnected = Callable[[], Awaitable[bool]]


@dataclass
class Outcome:
    """One row's answer, with what editor protocols report about it."""

    text: str
    finish_reason: str  # "stop", "length" or "cancelled"
    prompt_tokens: int
    completion_tokens: int
    model: str
    prompt_ms: float
    predict_ms: float
    truncated: bool = False  # the prompt was trimmed to the context
    warning: str | None = None  # e.g. a suffix dropped for a model without FIM tokens
    cached_tokens: int = 0  # prompt tokens whose KV the prefix cache supplied


class Generation:
    """One call's rows on the engine: ``n`` per request, in order; events as they come."""

    def __init__(
        self,
        service: CompletionService,
        prepared: list[Request],
        model: str,
        client: Any,
        disconnected: Disconnected | None,
        stream: bool,
        *,
        requests: list[GenerationRequest] | None = None,
        editor: EditorContext | None = None,
        response_id: str | None = None,
        adapter: str | None = None,
    ) -> None:
        self.service, self.prepared, self.model = service, prepared, model
        self.sequences: list[Sequence] = [seq for built in prepared for seq in built.new_sequences()]
        self.client, self.disconnected, self.stream = client, disconnected, stream
        # The id the client is answered with: records and editor events name the suggestion by it.
        self.id = response_id or f"cmpl-{uuid.uuid4().hex[:24]}"
        self.requests, self.editor, self.adapter = requests or [], editor, adapter
        self.agent = CALLER.get()
        self.streamed = [""] * len(self.sequences)  # the text each row streamed (stream only)
        # Streams behind a confidence gate or a cut send each row's text only once it is settled.
        self._holding = stream and service.recorder.holds
        self._ready: deque[tuple[int, str | None]] = deque()
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self._events: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()
        self._pending: list[tuple[int, str | None]] = []
        self._remaining = len(self.sequences)
        self._closed = False

    def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        for row, seq in enumerate(self.sequences):
            if self.stream:
                # Only streams wake the event loop per token; others just wait for the end.
                seq.on_text = lambda delta, row=row: loop.call_soon_threadsafe(
                    self._events.put_nowait, (row, delta)
                )
            seq.on_done = lambda s, row=row: loop.call_soon_threadsafe(self._events.put_nowait, (row, None))

    async def _next(self) -> tuple[int, str | None] | None:
        """The next event, or None when the client went away."""
        while True:
            if self._ready:
                return self._ready.popleft()
            try:
                event = await asyncio.wait_for(self._events.get(), timeout=0.25)
            except asyncio.TimeoutError:
                if self.disconnected is not None and await self.disconnected():
                    return None
                continue
            row, delta = event
            now = time.monotonic()
            if delta is None:
                self._remaining -= 1
                if not self._remaining:
                    self.finished_at = now
                self.service.raise_for(self.sequences[row])
                shown = self.service.settle(self, row)
                settled = self.sequences[row].text  # the whole text, or what settling cut it to
                if self._holding and shown and settled:
                    self.first_token_at = self.first_token_at or now
                    self.streamed[row] += settled
                    self._ready.append(event)
                    return row, settled
            elif self._holding:
                continue
            else:
                self.first_token_at = self.first_token_at or now
                self.streamed[row] += delta
            return event

    async def peek(self) -> None:
        """Wait for the first event, so that what fails at once is an error status, not a stream."""
        try:
            event = await self._next() if self._remaining else None
        except BaseException:
            self.close()
            raise
        if event is not None:
            self._pending.append(event)

    async def events(self) -> AsyncIterator[tuple[int, str | None]]:
        """``(row, text delta)`` (streams only), then ``(row, None)`` when that row is done; the rows
        are cancelled and released when the consumer stops (or the client goes away)."""
        try:
            while self._pending:
                yield self._pending.pop(0)
            while self._remaining or self._ready:
                event = await self._next()
                if event is None:
                    return
                yield event
        finally:
            self.close()

    async def wait(self) -> Generation:
        """Run every row to its end (or until the client goes away)."""
        async for _ in self.events():
            pass
        return self

    def cancel(self) -> None:
        """Stop every row at its next step (what it has generated so far is its text)."""
        for seq in self.sequences:
            seq.cancel()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.service.release(self)

    # -- what protocols report ------------------------------------------------------------------
    @property
    def warning(self) -> str | None:
        warnings = sorted({built.warning for built in self.prepared if built.warning})
        return "; ".join(warnings) or None

    def outcome(self, row: int = 0) -> Outcome:
        """Row ``row``'s answer (its streamed text when streaming) and timings."""
        seq = self.sequences[row]
        built = self.prepared[0] if len(self.prepared) == 1 else self._owner(row)
        finished = self.finished_at or time.monotonic()
        first = self.first_token_at or finished
        return Outcome(
            text=self.streamed[row] if self.stream else seq.text,
            finish_reason=seq.finish_reason or "cancelled",
            prompt_tokens=len(seq.prompt_ids),
            completion_tokens=len(seq.tokens),
            model=self.model,
            prompt_ms=(first - self.started) * 1000,
            predict_ms=(finished - first) * 1000,
            truncated=built.truncated,
            warning=built.warning,
            cached_tokens=seq.cached_tokens,
        )

    def _owner(self, row: int) -> Request:
        for built in self.prepared:
            if self.sequences[row] in built.sequences:
                return built
        raise IndexError(row)

    def request_of(self, row: int) -> GenerationRequest | None:
        """The typed request row ``row`` answers (None when the caller gave none)."""
        built = self._owner(row)
        index = next(i for i, b in enumerate(self.prepared) if b is built)
        return self.requests[index] if index < len(self.requests) else None

    def debug_data(self, *, snippets: bool, prompt: bool) -> dict[str, Any]:
        """Tabby's ``debug_data`` of the first prompt: the context snippets it kept, the prompt as sent."""
        built = self.prepared[0]
        data: dict[str, Any] = {}
        if snippets:
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
                for i, s in enumerate(built.context_snippets)
            ]
        if prompt:
            data["prompt"] = built.prompt_text
        return data


def start_engine(cfg: ServeConfig, model: Any, tokenizer: Any) -> Engine:
    """The engine that serves ``cfg``, started (continuous batching, unless ``batching: micro`` or a
    seq2seq model asks for static batches)."""
    engine = engine_for(
        model,
        tokenizer,
        cfg.batching,
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


class CompletionService:
    """One model, its engine and its named adapters, behind the one public completion call."""

    def __init__(self, cfg: ServeConfig, model: Any, tokenizer: Any, engine: Engine) -> None:
        self.cfg, self.model, self.tokenizer, self.engine = cfg, model, tokenizer, engine
        self.name = cfg.served_name or cfg.model
        # Named adapters over the one base (vLLM's multi-LoRA convention: `model` picks one).
        self.adapters: list[str] = list(cfg.adapters)
        self.context = cfg.context_length or engine.context_length or 2048
        self.generator = Generator(
            engine, context=self.context, prefix_ratio=cfg.fim_prefix_ratio, strict_fim=cfg.strict_fim
        )
        self.started = time.time()
        self.recorder = Recorder(None)  # off: serve --record / --min-confidence give the app its own
        self.table = AdapterTable(engine, self.name, dict(cfg.adapters))
        self._live: set[Generation] = set()  # generations queued or running (a swap pins their rows)
        if cfg.adapter is not None:
            self.table.folders[self.name] = str(cfg.adapter)
        self.repos = None
        if cfg.repos:
            from codetune.serve.repos import ServedRepos

            self.repos = ServedRepos(cfg.repos, refresh_s=cfg.repo_refresh_s)
        # A newer request from the same client (same caller and `user`) cancels its older one still
        # running (keystrokes).
        self._clients: dict[tuple[Caller, str], Generation] = {}
        self.admission = FairAdmission(
            engine,
            max_queue=cfg.max_queue,
            max_rows=engine.max_batch_size,
            token_budget=cfg.kv_token_budget,
            reserve=cfg.reserve_for_new_clients,
        )

    # -- models ---------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """The base's served name, then each adapter's."""
        return [self.name, *self.adapters]

    def adapter_for(self, model: str | None) -> str | None:
        """The adapter a request's ``model`` names (None: the base); 404 for a name this server lacks.

        The base answers to its served name, to no name, and to the aliases editors send by default
        (``model_aliases``: ``codestral-latest``, Copilot's engine, ...); Ollama's ``:latest`` tag is
        the name itself.
        """
        name = model.removesuffix(":latest") if model else model
        if not name or name == self.name or name in self.cfg.model_aliases:
            return None
        if name in self.adapters:
            return name
        aliases = (
            f" (and for the base: {', '.join(self.cfg.model_aliases)})" if self.cfg.model_aliases else ""
        )
        raise ServingError(
            404,
            f"model {model!r} does not exist; this server has: {', '.join(self.model_names())}{aliases}",
            type="not_found_error",
            param="model",
            code="model_not_found",
        )

    @property
    def device(self) -> str:
        return str(getattr(self.model, "device", "cpu"))

    def health(self, *, details: bool = True) -> dict[str, Any]:
        """Liveness; with ``details`` (what the API key guards) the model, adapters and counters."""
        if not details:
            return {"status": "ok"}
        return {
            "status": "ok",
            "model": self.name,
            **({"adapters": self.adapters} if self.adapters else {}),
            "uptime_s": round(time.time() - self.started, 1),
            **self.engine.stats(),
            **self.admission.stats(),
        }

    # -- the call -------------------------------------------------------------------------------
    def sampling(self, max_tokens: int | None = None, **settings: Any) -> SamplingParams:
        """A request's decoding settings (``SamplingParams`` fields): the server's default length when
        it names none, at most its limit; a 400 naming the field out of range."""
        if max_tokens is not None and max_tokens > self.cfg.max_tokens_limit:
            raise ServingError(
                400,
                f"max_tokens is {max_tokens}; this server allows at most {self.cfg.max_tokens_limit}",
                param="max_tokens",
            )
        try:
            params = SamplingParams(
                max_new_tokens=self.cfg.default_max_tokens if max_tokens is None else max_tokens, **settings
            )
            params.check()
        except InvalidParams as error:
            raise ServingError(400, str(error), param=error.field, code="invalid_value") from None
        except (ValueError, TypeError, OverflowError) as error:
            raise ServingError(400, str(error), code="invalid_value") from None
        return params

    async def generate(
        self,
        requests: list[GenerationRequest],
        *,
        model: str | None = None,
        client: str | None = None,
        caller: Caller | None = None,
        editor: EditorContext | None = None,
        disconnected: Disconnected | None = None,
        stream: bool = False,
        response_id: str | None = None,
    ) -> Generation:
        """Queue ``requests`` (``n`` rows each) and return their running generation.

        ``model`` picks an adapter (404 for an unknown one); ``caller``: who sent it (its share of the
        server); ``client`` (a user, slot or client id): a newer call of the same caller and client
        cancels this one; ``editor``: the cursor's file, the context the editor sent, and the
        repository it names. A prompt that cannot be served is a 400 and a client over its share of
        a full queue a 503, before anything is generated; with ``stream`` the first event is awaited too.
        ``response_id``: the id the client is answered with (the generation's ``id``; made when not given).
        """
        adapter = self.adapter_for(model)
        await self.refresh_repos()
        # Tokenizing (and retrieving context for) a prompt of a megabyte takes seconds: not on the loop.
        prepared = await asyncio.to_thread(lambda: [self._prepare(request, editor) for request in requests])
        runs_with = self.table.runs_with(adapter)
        for built in prepared:
            built.adapter = runs_with
        caller = caller or Caller("")
        generation = Generation(
            self,
            prepared,
            model or self.name,
            (caller, client) if client is not None else None,
            disconnected,
            stream,
            requests=requests,
            editor=editor,
            response_id=response_id,
            adapter=self.table.folders.get(adapter or self.name),
        )
        if self.recorder.active:
            for seq in generation.sequences:
                seq.keep_logprobs = True
        self._admit(generation, caller)
        if stream:
            await generation.peek()
        return generation

    def _prepare(self, request: GenerationRequest, editor: EditorContext | None) -> Request:
        if request.repo_context is None and request.messages is None and isinstance(request.prompt, str):
            found = self._repo_context(request.prompt, request.suffix or "", editor)
            if found is not None:
                request = dataclasses.replace(request, repo_context=found)
        try:
            return self.generator.prepare(request)
        except RequestError as error:
            raise ServingError(400, str(error), param=error.param, code=error.code) from None

    # -- admission: the one place requests meet the engine's queue --------------------------------
    def _admit(self, generation: Generation, caller: Caller) -> None:
        """Queue the rows under the caller's fair share (503 when it is over its share of a full
        queue); a client's older rows still running go first."""
        generation._listen()
        self.table.pin(generation.sequences)
        self._live.add(generation)
        client = generation.client
        if client is not None:
            older = self._clients.get(client)
            if older is not None:
                # Counted, and their place free for the newer request at once.
                self.admission.cancel([seq for seq in older.sequences if not seq.done])
            self._clients[client] = generation
        try:
            self.admission.admit(caller, generation.sequences)
        except QueueFull as error:
            self._forget(generation)
            raise ServingError(
                503, f"server busy: {error}; retry later", type="server_error", code="queue_full"
            ) from None

    def release(self, generation: Generation) -> None:
        """Cancel what is still running of a generation and free its slots (its consumer is gone)."""
        self._forget(generation)
        self.admission.cancel([seq for seq in generation.sequences if not seq.done])
        for seq in generation.sequences:
            self.engine.release(seq)
        self.table.drop_retired(self.live_sequences)

    def live_sequences(self) -> list[Sequence]:
        """The rows of every generation queued or running."""
        return [seq for generation in list(self._live) for seq in generation.sequences]

    def _forget(self, generation: Generation) -> None:
        self._live.discard(generation)
        client = generation.client
        if client is not None and self._clients.get(client) is generation:
            del self._clients[client]

    @staticmethod
    def raise_for(seq: Sequence) -> None:
        """A failed row as the client's error: its pattern's timeout a 400, anything else a 500."""
        error = seq.error
        if error and error.startswith("PatternTimeout"):
            raise ServingError(400, error, param="truncate_before_pattern", code="pattern_timeout")
        if error:
            raise ServingError(500, f"generation failed: {error}", type="server_error")

    # -- what is kept of each answer, and what is withheld ---------------------------------------
    def settle(self, generation: Generation, row: int) -> bool:
        """Record a finished row and gate it; False when its client gets an empty completion.

        Code completions only: a chat answer, a cancelled or a failed row is neither recorded nor gated.
        """
        seq = generation.sequences[row]
        request = generation.request_of(row)
        if (
            not self.recorder.active
            or request is None
            or request.messages is not None
            or seq.finish_reason not in ("stop", "length")
        ):
            return True
        from codetune.artifacts.records import CompletionRecord
        from codetune.languages import language_for_path

        editor = generation.editor or EditorContext()
        path = editor.filepath or None
        language = request.language or (found.name if path and (found := language_for_path(path)) else None)
        built = generation._owner(row)
        record = CompletionRecord(
            id=generation.id,
            index=row,
            prefix=request.prompt if isinstance(request.prompt, str) else built.text,
            suffix=request.suffix,
            text=seq.text,
            client=generation.agent,
            model=self.name,
            adapter=generation.adapter,
            language=language,
            path=path,
            finish_reason=seq.finish_reason,
            latency_ms=round((time.monotonic() - generation.started) * 1000, 1),
            mean_logprob=seq.mean_logprob,
            **self._token_trace(seq),
        )
        shown = self.recorder.settle(record)
        seq.text = record.text if shown else ""  # what every protocol reads once the row is done
        return shown

    def _token_trace(self, seq: Sequence) -> dict[str, Any]:
        """Each kept token's log-probability and where its text ends in the row's text (cut by a stop
        or post-processing: the tokens past its end are left out)."""
        if len(seq.token_logprobs) != len(seq.tokens) or not seq.tokens:
            return {}
        ends = token_ends(self.tokenizer, seq.tokens[:TRACED_TOKENS])
        kept = next((i for i, end in enumerate(ends) if end > len(seq.text)), len(ends))
        return {
            "token_logprobs": [max(round(v, 4), -1e9) for v in seq.token_logprobs[:kept]],
            "token_ends": ends[:kept],
        }

    # -- a new adapter without a restart ----------------------------------------------------------
    async def swap_adapter(self, name: str, path: str) -> Swap:
        """Serve the LoRA run at ``path`` as ``name`` (the base's served name: what requests naming no
        model get), loaded between two decoding steps; running requests finish on the weights they
        started with. A 400 for what cannot be served over this model."""
        from codetune.errors import CodetuneError
        from codetune.serve.config import ADAPTER_NAME

        if name != self.name and not ADAPTER_NAME.fullmatch(name):
            raise ServingError(
                400, f"adapter name {name!r}: use letters, digits and . _ : - (at most 64)", param="name"
            )

        root = self.cfg.adapter_dir
        if root is None:
            raise ServingError(
                403,
                "this server rolls out no adapters: start it with --adapter-dir DIR and name a run in DIR",
                type="permission_error",
                code="swaps_off",
            )

        def load() -> Swap:
            folder = self.table.check(name, Path(path), root, self.cfg.model, self.tokenizer)
            return self.table.swap(name, folder, self.live_sequences)

        try:
            swap = await asyncio.to_thread(load)
        except (CodetuneError, OSError, ValueError) as error:
            raise ServingError(400, str(error), param="path", code="adapter_not_loaded") from None
        self.model = self.engine.model
        if name != self.name and name not in self.adapters:
            self.adapters.append(name)
        return swap

    # -- repository context ---------------------------------------------------------------------
    async def refresh_repos(self) -> None:
        """Pick up changed files of the ``--repo`` repositories, indexing in a worker thread: the event
        loop keeps answering other requests, which get the old index until the new one is ready."""
        if self.repos is not None:
            await self.repos.refreshed()

    def _repo_context(self, prefix: str, suffix: str, editor: EditorContext | None) -> Any:
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
            target, name = editor.filepath or "", ""
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
                editor.filepath, prefix, suffix, count_tokens=count, options=options,
                client_snippets=editor.snippets, repo=editor.repo, hints=editor.hints,
            )  # fmt: skip
        return RepoContext(tuple(snippets), target_path=target, repo_name=name) if snippets else None
