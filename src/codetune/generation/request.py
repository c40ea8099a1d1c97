"""The one typed request and its builder: prompt (+ suffix, or chat messages) and settings -> prompt
ids, post-processor, sequences.

Every path (the Python API, generate, eval, every serving protocol) asks with a
:class:`GenerationRequest`, which a ``Generator`` turns into a :class:`Request` through
``build_request``, so a prompt is rendered, trimmed and post-processed the same way wherever it
comes from. Chat messages are rendered by the tokenizer's chat template (or a plain one), FIM
prompts by the family's ``codetune.fim.FimFormat``. Inputs come shaped like editors send them: a
whole file around the cursor is trimmed to the context (the prefix from the left, the suffix from
the right, at ``prefix_ratio``), and a suffix sent to a model without FIM tokens is answered as a
prefix-only completion with a warning (unless ``strict_fim``).

Repository context (``repo_context``) is laid out by ``codetune.context.render_for`` in the
tokenizer's family format: before the FIM prefix sentinel for families with repository tokens, as
comment headers opening the prefix otherwise, and before a plain prompt. ``codetune build`` lays out
its training examples with the same function and ``FimFormat``, so a model learns the prompts it gets.
When a prompt is over the context length, whole snippets go first (the last one first), and only
then is the prefix or suffix trimmed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from codetune.errors import CodetuneError
from codetune.fim import FimFormat, RenderedContext, context_ids
from codetune.generation.params import SamplingParams
from codetune.generation.postprocess import FimPostprocessor, fim_postprocessor
from codetune.generation.sequence import Cutter, Sequence
from codetune.generation.stops import PatternBudget

if TYPE_CHECKING:
    from codetune.context import RepoContext, Snippet

DEFAULT_PREFIX_RATIO = 0.75
NO_FIM_WARNING = (
    "this model has no fill-in-the-middle tokens: the suffix was ignored and the prefix completed alone"
)


@dataclass
class GenerationRequest:
    """What a caller asks for: a prompt (text or token ids), with a suffix for fill-in-the-middle, or
    chat messages (``{"role", "content"}``), and the settings to decode it with."""

    prompt: str | list[int] = ""
    suffix: str | None = None
    messages: list[dict[str, str]] | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    # The language the code is in (post-processing parses a FIM completion in it).
    language: str | None = None
    postprocess: bool = True
    # Snippets of other files of the repository, laid out in the model family's format.
    repo_context: RepoContext | None = None
    # The peft adapter the rows run with ("__base__": none; None: as loaded), and whether the prompt
    # may reuse and fill the prefix cache (llama.cpp's cache_prompt).
    adapter: str | None = None
    cache_prompt: bool = True


class RequestError(CodetuneError):
    """A request that cannot be served; ``param`` and ``code`` name what is wrong (HTTP gives a 400)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param, self.code = param, code


@dataclass
class Request:
    """A prompt ready for an engine, with what was trimmed and what the client should be told."""

    prompt_ids: list[int]
    text: str
    params: SamplingParams
    postprocessor: FimPostprocessor | None = None
    warning: str | None = None
    prompt_tokens_sent: int = 0
    prefix_tokens_dropped: int = 0
    suffix_tokens_dropped: int = 0
    # Raw cut/finish callables for callers with their own post-processing (used when no post-processor).
    cutter: Cutter | None = None
    finisher: Callable[[str], str] | None = None
    sequences: list[Sequence] = field(default_factory=list)
    adapter: str | None = None
    cache_prompt: bool = True
    # Repository context: the snippets in the prompt, and how many were dropped to fit the context.
    context_snippets: list[Snippet] = field(default_factory=list)
    context_snippets_dropped: int = 0
    tokenizer: Any = field(default=None, repr=False, compare=False)

    @property
    def truncated(self) -> bool:
        return bool(self.prefix_tokens_dropped or self.suffix_tokens_dropped)

    @property
    def prompt_text(self) -> str:
        """The prompt as sent, sentinels and repository tokens spelled out (Tabby's ``debug_data.prompt``)."""
        if self.tokenizer is None:
            return self.text
        return self.tokenizer.decode(
            self.prompt_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    def new_sequences(self) -> list[Sequence]:
        """The request's rows: ``n`` of them (one for beam search, which returns ``n`` beams)."""
        post = self.postprocessor
        copies = 1 if self.params.num_beams > 1 else self.params.n
        budget = PatternBudget()  # the request's patterns: one budget for its rows
        self.sequences = [
            Sequence(
                list(self.prompt_ids),
                self.params,
                post.cut if post else self.cutter,
                post.finish if post else self.finisher,
                copy=k,
                prefix_cache=self.cache_prompt,
                adapter=self.adapter,
                pattern_budget=budget,
            )
            for k in range(copies)
        ]
        return self.sequences

    def usage_details(self) -> dict[str, Any]:
        """What of the prompt was kept (added to OpenAI's ``usage``)."""
        details = {
            "prompt_tokens_sent": self.prompt_tokens_sent,
            "prompt_tokens_kept": len(self.prompt_ids),
            "prefix_tokens_dropped": self.prefix_tokens_dropped,
            "suffix_tokens_dropped": self.suffix_tokens_dropped,
            "truncated": self.truncated,
        }
        if self.context_snippets or self.context_snippets_dropped:
            details["context_snippets_kept"] = len(self.context_snippets)
            details["context_snippets_dropped"] = self.context_snippets_dropped
        return details


def _text_ids(tokenizer: Any, text: str, *, special: bool = False) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"] if text else []


def has_fim(tokenizer: Any) -> bool:
    return FimFormat.from_tokenizer(tokenizer) is not None


def _fim_ids(tokenizer: Any, prefix: str, suffix: str, context: RenderedContext | None = None) -> list[int]:
    """The family's FIM prompt; RequestError when the tokenizer has no FIM tokens."""
    try:
        return FimFormat.require(tokenizer).prompt(prefix, suffix, context)
    except CodetuneError as error:
        raise RequestError(str(error), param="suffix", code="fim_unsupported") from None


PLAIN_CHAT_TEMPLATE = "### {role}:\n{content}\n\n"


def chat_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[str]]:
    """Render chat messages with the tokenizer's chat template, or a plain one; returns (prompt, stops)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, []
    text = "".join(
        PLAIN_CHAT_TEMPLATE.format(role=m["role"].capitalize(), content=m["content"]) for m in messages
    )
    return text + "### Assistant:\n", ["\n### "]


def build_request(
    tokenizer: Any,
    prompt: str | list[int],
    suffix: str | None = None,
    params: SamplingParams | None = None,
    *,
    context: int | None = None,
    seq2seq: bool = False,
    prefix_ratio: float = DEFAULT_PREFIX_RATIO,
    strict_fim: bool = False,
    postprocess: bool = True,
    language: str | None = None,
    min_length: int = 1,
    repo_context: RepoContext | None = None,
) -> Request:
    """Render one prompt for an engine; RequestError for what no trimming can fix.

    ``repo_context``: snippets of other files of the repository (``codetune.context``), laid out in
    the tokenizer's family format; snippets are dropped whole, the last first, before any trimming.
    """
    params = params or SamplingParams()
    room = None
    if context is not None and not seq2seq:
        room = context - params.max_new_tokens
        if room < 1:
            raise RequestError(
                f"this model's maximum context length is {context} tokens and {params.max_new_tokens} "
                "new tokens were requested: ask for fewer",
                param="max_tokens",
                code="context_length_exceeded",
            )
    warning = None
    if suffix is not None and not has_fim(tokenizer):
        if strict_fim:
            raise RequestError(
                "this model's tokenizer has no fill-in-the-middle tokens, so a suffix cannot be used",
                param="suffix",
                code="fim_unsupported",
            )
        warning = NO_FIM_WARNING
    post = (
        fim_postprocessor(prompt, suffix, language, min_length)
        if suffix is not None and postprocess and isinstance(prompt, str)
        else None
    )
    snippets = repo_context.snippets if repo_context is not None else ()
    if isinstance(prompt, list):
        if snippets:
            raise RequestError("repository context needs a text prompt, not token ids", param="prompt")
        if any(not isinstance(t, int) or t < 0 or t >= len(tokenizer) for t in prompt):
            raise RequestError("prompt token id out of the vocabulary", param="prompt")
        request = _plain(
            tokenizer.decode(prompt), list(prompt), params, room, post, warning, seq2seq, tokenizer
        )
    else:
        fim_suffix = suffix if warning is None else None
        request = None
        sent = 0
        for count in range(len(snippets), 0, -1):
            kept = repo_context.keep(count)  # type: ignore[union-attr]
            ids = context_prompt_ids(tokenizer, prompt, fim_suffix, kept, seq2seq=seq2seq)
            sent = sent or len(ids)
            if room is None or len(ids) <= room:
                request = Request(ids, prompt, params, post, warning, sent)
                request.context_snippets = list(kept.snippets)
                request.context_snippets_dropped = len(snippets) - count
                break
        if request is None:
            # No context, or not even one snippet fits: the prompt alone, trimmed if need be.
            if fim_suffix is not None:
                request = _fim(tokenizer, prompt, fim_suffix, params, room, prefix_ratio, post)
            else:
                ids = [*_plain_bos(tokenizer, seq2seq), *_text_ids(tokenizer, prompt, special=seq2seq)]
                request = _plain(prompt, ids, params, room, post, warning, seq2seq, tokenizer)
            request.context_snippets_dropped = len(snippets)
            request.prompt_tokens_sent = max(request.prompt_tokens_sent, sent)
    request.tokenizer = tokenizer
    return request


def context_prompt_ids(
    tokenizer: Any,
    prompt: str,
    suffix: str | None,
    repo_context: RepoContext | None,
    *,
    seq2seq: bool = False,
) -> list[int]:
    """A prompt's ids with its repository context, untrimmed: what ``build_request`` sends when it fits.

    With a suffix, the family's FIM prompt (``FimFormat.prompt`` with the rendered context, the same
    call a build's PSM example starts with); without, the context's ids and then the plain prompt's.
    """
    from codetune.context import render_for

    rendered = render_for(tokenizer, repo_context)
    if suffix is not None:
        return _fim_ids(tokenizer, prompt, suffix, rendered)
    text = rendered.lead + prompt
    return [
        *_plain_bos(tokenizer, seq2seq),
        *context_ids(tokenizer, rendered),
        *_text_ids(tokenizer, text, special=seq2seq),
    ]


def _plain_bos(tokenizer: Any, seq2seq: bool) -> list[int]:
    """The BOS a causal model's plain prompt starts with (codetune.fim.bos_ids); none for seq2seq."""
    from codetune.fim import bos_ids

    return [] if seq2seq else bos_ids(tokenizer)


def _plain(
    text: str,
    ids: list[int],
    params: SamplingParams,
    room: int | None,
    post: FimPostprocessor | None,
    warning: str | None,
    seq2seq: bool,
    tokenizer: Any,
) -> Request:
    sent = len(ids)
    if room is not None and len(ids) > room:
        bos = _plain_bos(tokenizer, seq2seq)
        head = bos if bos and ids[:1] == bos else []
        # an editor's prefix: the text nearest the cursor matters most (after the BOS it must start with)
        ids = [*head, *ids[len(head) :][-(room - len(head)) :]] if room > len(head) else ids[-room:]
    if not ids and not seq2seq:
        ids = [tokenizer.eos_token_id]
    return Request(ids, text, params, post, warning, sent, sent - len(ids) if sent > len(ids) else 0)


def _fim(
    tokenizer: Any,
    prefix: str,
    suffix: str,
    params: SamplingParams,
    room: int | None,
    prefix_ratio: float,
    post: FimPostprocessor | None,
) -> Request:
    ids = _fim_ids(tokenizer, prefix, suffix)
    sent = len(ids)
    if room is None or sent <= room:
        return Request(ids, prefix, params, post, None, sent)
    before, after = _text_ids(tokenizer, prefix), _text_ids(tokenizer, suffix)
    overhead = len(_fim_ids(tokenizer, "", ""))
    budget = room - overhead
    if budget < 2:
        raise RequestError(
            f"the context leaves no room for a prompt ({room} tokens, {overhead} for FIM markers)",
            param="max_tokens",
            code="context_length_exceeded",
        )
    # Re-encoding trimmed text can merge tokens differently: shrink until the prompt fits.
    for _ in range(4):
        keep_after = min(len(after), max(budget - len(before), int(budget * (1 - prefix_ratio))))
        keep_before = min(len(before), budget - keep_after)
        kept_prefix = tokenizer.decode(before[len(before) - keep_before :]) if keep_before else ""
        kept_suffix = tokenizer.decode(after[:keep_after]) if keep_after else ""
        ids = _fim_ids(tokenizer, kept_prefix, kept_suffix)
        if len(ids) <= room:
            break
        budget -= len(ids) - room
    else:
        ids = ids[-room:]
    return Request(
        ids,
        prefix,
        params,
        post,
        None,
        sent,
        prefix_tokens_dropped=len(before) - keep_before,
        suffix_tokens_dropped=len(after) - keep_after,
    )
