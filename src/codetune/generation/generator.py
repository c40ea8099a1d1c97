"""One model's engine and prompt rules: typed requests in, completions out.

The Python API, ``codetune generate``, ``codetune eval`` and ``codetune serve`` each hold a
:class:`Generator` over their engine. It owns what the model (or the server) decides about every
prompt: the context length to trim to, the share of a trimmed FIM prompt kept for the prefix, whether
a suffix without FIM tokens is an error, and a cap on prompt tokens (eval's ``max_prompt_tokens``).
A request's own settings travel in its :class:`~codetune.generation.request.GenerationRequest`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from codetune.generation.engines import Engine
from codetune.generation.params import InvalidParams
from codetune.generation.request import (
    DEFAULT_PREFIX_RATIO,
    GenerationRequest,
    Request,
    RequestError,
    build_request,
    chat_prompt,
)
from codetune.generation.sequence import Completion, Sequence


def complete_requests(engine: Engine, requests: list[Request]) -> Iterator[tuple[int, list[Completion]]]:
    """Yield ``(request index, its completions)`` as each request's rows all finish."""
    owner: dict[int, int] = {}
    seqs: list[Sequence] = []
    for i, request in enumerate(requests):
        for seq in request.new_sequences():
            owner[id(seq)] = i
            seqs.append(seq)
    remaining = {i: len(r.sequences) for i, r in enumerate(requests)}
    for seq in engine.run(seqs):
        i = owner[id(seq)]
        remaining[i] -= 1
        if remaining[i] == 0:
            yield i, [c for s in requests[i].sequences for c in s.completions()]


@dataclass
class Generator:
    """An engine with the rules every prompt it runs is built by."""

    engine: Engine
    # Prompt + completion limit to trim prompts to (None: no trimming).
    context: int | None = None
    prefix_ratio: float = DEFAULT_PREFIX_RATIO
    strict_fim: bool = False
    # At most this many prompt tokens (a seq2seq encoder's input is cut on the left to it).
    max_prompt_tokens: int | None = None

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    def prepare(self, request: GenerationRequest) -> Request:
        """The request's prompt ids, post-processor and settings; RequestError for what no trim fixes."""
        prompt, params = request.prompt, request.params
        if request.messages is not None:
            try:
                prompt, stops = chat_prompt(self.tokenizer, request.messages)
            except Exception as error:  # a template's own error names what it disliked
                raise RequestError(f"cannot apply the chat template: {error}", param="messages") from None
            params = dataclasses.replace(params, stop=[*params.stop, *stops])
            try:
                params.check()
            except InvalidParams as error:
                raise RequestError(str(error), param=error.field, code="invalid_value") from None
        seq2seq = self.engine.seq2seq
        context = self.context
        if self.max_prompt_tokens is not None and not seq2seq:
            cap = self.max_prompt_tokens + params.max_new_tokens
            context = cap if context is None else min(context, cap)
        built = build_request(
            self.tokenizer,
            prompt,
            request.suffix,
            params,
            context=context,
            seq2seq=seq2seq,
            prefix_ratio=self.prefix_ratio,
            strict_fim=self.strict_fim,
            postprocess=request.postprocess,
            language=request.language,
            repo_context=request.repo_context,
        )
        if seq2seq and self.max_prompt_tokens is not None:  # the encoder's own limit: cut on the left
            built.prompt_ids = built.prompt_ids[-self.max_prompt_tokens :]
        built.adapter, built.cache_prompt = request.adapter, request.cache_prompt
        return built

    def run(self, requests: list[Request]) -> Iterator[tuple[int, list[Completion]]]:
        """Complete prepared requests offline, yielding ``(index, completions)`` as each finishes."""
        return complete_requests(self.engine, requests)

    def complete(self, requests: list[GenerationRequest]) -> Iterator[tuple[int, list[Completion]]]:
        """Prepare and complete typed requests (every prompt is built before any decoding starts)."""
        return self.run([self.prepare(request) for request in requests])
