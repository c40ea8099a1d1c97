"""Fill-in-the-Middle: one registry of model families, chosen from the tokenizer's own tokens.

A family is one ``register_family(FimFamily(...))`` line: its sentinels, whether its prompts start
with BOS, which token ends a middle, and its repository tokens. :class:`FimFormat` binds a family to
a tokenizer and is the only place that lays out FIM token ids, so what ``build`` trains on
(:meth:`FimFormat.example`) starts with exactly what ``serve``, ``generate`` and ``eval`` send
(:meth:`FimFormat.prompt`).

Text is encoded piece by piece and sentinels are inserted by id, so a sentinel is never split by the
tokenizer nor produced from user text. The suffix and the middle are encoded without the implicit
leading space of SentencePiece-style tokenizers (Meta's ``encode_infilling``, see ``_bare``), the
prefix with it, as Meta's reference does; for byte-level tokenizers both encodings are the same.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from codetune.errors import CodetuneError

# Meta's marker for encoding without the implicit leading space: ``sp_model.encode("☺" + s)[2:]``
# (meta-llama/codellama llama/tokenizer.py, Tokenizer.encode_infilling / decode_infilling). No
# tokenizer merges it with what follows, so it is also what generated ids are decoded behind.
PROBE = "☺"


@dataclass(frozen=True)
class FimFamily:
    """The FIM conventions of one model family (facts from the sources named at each entry)."""

    name: str
    prefix: str
    suffix: str
    middle: str
    pad: str | None = None
    # The token that ends a middle; None: the tokenizer's EOS.
    eot: str | None = None
    # Prompts (and examples) start with the tokenizer's BOS.
    bos: bool = False
    # Repository-level context: (repo name token, file separator token) spellings, first found wins.
    repo: tuple[tuple[str, str], ...] = ()
    # Whether a newline follows the repository name (Qwen2.5-Coder's format) or not (StarCoder2's).
    repo_newline: bool = False
    # Whether a FIM prompt's target path goes after the prefix sentinel (StarCoder2) or before it.
    repo_target_in_prefix: bool = False
    # The sentinels are reserved tokens every model of the family has but none was pretrained on (Gemma's
    # <unused*>): the family is only the tokenizer's once a codetune build has taught it (RESERVED_MARK).
    reserved: bool = False
    source: str = ""

    @property
    def sentinels(self) -> tuple[str, ...]:
        """The family's FIM tokens (prefix, suffix, middle, then pad and eot when it has them)."""
        return tuple(t for t in (self.prefix, self.suffix, self.middle, self.pad, self.eot) if t)


FAMILIES: dict[str, FimFamily] = {}


def register_family(family: FimFamily) -> FimFamily:
    """Add a family; detection tries families in registration order."""
    FAMILIES[family.name] = family
    return family


register_family(
    FimFamily(
        "starcoder",
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        pad="<fim_pad>",
        # StarCoder2 repository format: <repo_name>name<file_sep>path\ncode... (StarCoder 2 paper,
        # arXiv 2402.19173 section 5); StarCoder 1 spells them <reponame> / <filename>. Its repository
        # FIM puts the target's path inside the prefix: <file_sep><fim_prefix>path\ncode_pre<fim_suffix>...
        repo=(("<repo_name>", "<file_sep>"), ("<reponame>", "<filename>")),
        repo_target_in_prefix=True,
        source="bigcode-project/Megatron-LM megatron/data/gpt_dataset.py (permute: PSM/SPM, EOD after the "
        "middle); tokens from the bigcode/starcoder2-* tokenizer_config.json",
    )
)
register_family(
    FimFamily(
        "santacoder",
        "<fim-prefix>",
        "<fim-suffix>",
        "<fim-middle>",
        pad="<fim-pad>",
        source="bigcode/santacoder tokenizer (dashes, not underscores); same Megatron permute as StarCoder",
    )
)
register_family(
    FimFamily(
        "codellama",
        "▁<PRE>",
        "▁<SUF>",
        "▁<MID>",
        eot="▁<EOT>",
        bos=True,
        source="meta-llama/codellama llama/generation.py infilling_prompt_tokens: [bos, PRE] + encode(pre) "
        "+ [SUF] + encode_infilling(suf) + [MID]; generation stops at eot_id; llama/tokenizer.py for the "
        "token spellings; transformers CodeLlamaTokenizer.set_infilling_processor agrees",
    )
)
register_family(
    FimFamily(
        "deepseek-coder",
        "<｜fim▁begin｜>",
        "<｜fim▁hole｜>",
        "<｜fim▁end｜>",
        # The base models end a completion with EOS 32014; the instruct tokenizer's EOS is <|EOT|>, so the
        # end is named, not taken from the tokenizer (deepseek-ai/DeepSeek-Coder README, Q&A).
        eot="<｜end▁of▁sentence｜>",
        bos=True,
        source="deepseek-ai/DeepSeek-Coder README.md 'Code Insertion' (tokenizer(text) adds BOS: "
        "add_bos_token in the tokenizer_config.json)",
    )
)
register_family(
    FimFamily(
        "qwen2.5-coder",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        pad="<|fim_pad|>",
        # The base tokenizer's EOS; the instruct one's is <|im_end|>, which does not end a middle.
        eot="<|endoftext|>",
        repo=(("<|repo_name|>", "<|file_sep|>"),),
        repo_newline=True,
        source="QwenLM/Qwen2.5-Coder README.md 'File-Level Code Completion' and 'Repository-Level Code "
        "Completion'",
    )
)

register_family(
    FimFamily(
        "gemma",
        "<unused0>",
        "<unused1>",
        "<unused2>",
        # Gemma 3 has no FIM tokens. It reserves <unused0>..<unused98> (ids 6-104, 6,242 in all) "to
        # assist model developers to more efficiently train/fine-tune Gemma by re-using the reserved
        # tokens rather than attempting to resize" the vocabulary (google/gemma_pytorch PR #44, issue
        # #12; google-deepmind/gemma issue #29). Reusing them keeps the 262,144-row tied embedding as it
        # is, so the tuned model and its GGUF keep the stock tokenizer; resizing Gemma's embeddings
        # starts training from a loss in the hundreds (huggingface/transformers issue #29219). A middle
        # ends with <eos>, as a Gemma document does; BOS is required (Gemma 3's add_bos_token).
        bos=True,
        reserved=True,
        source="codetune's own layout on Gemma's reserved tokens (see the comment above); PSM/SPM as "
        "StarCoder's",
    )
)

# tokenizer_config.json key naming the reserved-token FIM family a codetune build taught the model. A
# stock Gemma tokenizer has the same <unused*> tokens but a model that never saw them in that role: it
# gets prefix-only completions, not a FIM prompt it cannot read.
RESERVED_MARK = "codetune_fim"

# A tokenizer without FIM tokens gets this family's tokens added by `codetune build`; the run folder
# keeps that tokenizer, so train, eval and serve all find the same family in it.
ADDED_FAMILY = "starcoder"


@dataclass(frozen=True)
class RepoLayout:
    """A family's repository format: its two tokens, whether a newline ends the repository name, and
    whether the target's path goes inside the FIM prefix (StarCoder2) or before it (Qwen2.5-Coder)."""

    repo_token: str
    file_token: str
    newline_after_repo: bool
    target_in_prefix: bool = False


def repo_layouts() -> dict[str, RepoLayout]:
    """Every registered family's repository layouts, keyed by the repo-name token."""
    return {
        name: RepoLayout(name, sep, family.repo_newline, family.repo_target_in_prefix)
        for family in FAMILIES.values()
        for name, sep in family.repo
    }


def repo_layout(tokenizer: Any | None) -> RepoLayout | None:
    """The repository layout whose tokens this tokenizer has, if any."""
    if tokenizer is None:
        return None
    layouts = repo_layouts()
    vocab = token_ids(
        tokenizer, [t for layout in layouts.values() for t in (layout.repo_token, layout.file_token)]
    )
    for token, layout in layouts.items():
        if token in vocab and layout.file_token in vocab:
            return layout
    return None


@dataclass(frozen=True)
class RenderedContext:
    """Repository context laid out for one prompt (``codetune.context.render_for`` makes it).

    ``head``: (text, is_token) pieces that go before the FIM prefix sentinel (after BOS);
    ``lead``: text the prefix (or a plain prompt) starts with.
    """

    head: tuple[tuple[str, bool], ...] = ()
    lead: str = ""

    @property
    def text(self) -> str:
        """The context as one text, as it reads before a plain prompt (or in a debug view)."""
        return "".join(piece for piece, _ in self.head) + self.lead

    def __bool__(self) -> bool:
        return bool(self.head or self.lead)


@dataclass(frozen=True)
class RepoTokens:
    """Token ids of a family's repository-context format (for a repository-context builder)."""

    repo_name: int
    file_sep: int
    repo_name_token: str
    file_sep_token: str


@dataclass(frozen=True)
class FimPieces:
    prefix: str
    middle: str
    suffix: str

    @property
    def text(self) -> str:
        return self.prefix + self.middle + self.suffix


def _vocab_id(vocab: dict[str, int], token: str | None) -> int | None:
    return None if token is None else vocab.get(token)


class FimFormat:
    """A FIM family bound to a tokenizer: the token ids of prompts, training examples and stops."""

    def __init__(self, family: FimFamily, tokenizer: Any) -> None:
        vocab = tokenizer.get_vocab()
        missing = [t for t in (family.prefix, family.suffix, family.middle) if t not in vocab]
        if missing:
            raise CodetuneError(f"the tokenizer has no {family.name} FIM tokens {missing}")
        self.family = family
        self.tokenizer = tokenizer
        self.prefix_id = vocab[family.prefix]
        self.suffix_id = vocab[family.suffix]
        self.middle_id = vocab[family.middle]
        self.pad_id = _vocab_id(vocab, family.pad)
        end = _vocab_id(vocab, family.eot)
        self.end_id: int | None = end if end is not None else tokenizer.eos_token_id
        if self.end_id is None:
            raise CodetuneError(f"the tokenizer has neither {family.eot or 'an EOS token'} to end a middle")
        bos = getattr(tokenizer, "bos_token_id", None)
        self.bos_ids: list[int] = [bos] if family.bos and bos is not None else []
        self._repo = next(
            (
                (vocab[name], vocab[sep], name, sep)
                for name, sep in family.repo
                if name in vocab and sep in vocab
            ),
            None,
        )
        self._dummy_prefix: bool | None = None

    def __repr__(self) -> str:
        return f"FimFormat({self.family.name!r})"

    # --- finding the family -------------------------------------------------------------------------

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> FimFormat | None:
        """The format of the first family whose sentinels the tokenizer carries; None when it has none."""
        size = _size(tokenizer)
        cached = getattr(tokenizer, "_codetune_fim", None)
        if cached is not None and size is not None and cached[0] == size:
            return cached[1]
        vocab = tokenizer.get_vocab()
        marked = (getattr(tokenizer, "init_kwargs", None) or {}).get(RESERVED_MARK)
        found = None
        for family in FAMILIES.values():
            if family.reserved and marked != family.name:
                continue
            if all(token in vocab for token in (family.prefix, family.suffix, family.middle)):
                found = cls(family, tokenizer)
                break
        if size is not None:
            # A tokenizer that refuses new attributes is simply looked at again next time.
            with contextlib.suppress(AttributeError):
                tokenizer._codetune_fim = (size, found)
        return found

    @classmethod
    def ensure(cls, tokenizer: Any) -> tuple[FimFormat, int]:
        """The tokenizer's format, adding ``ADDED_FAMILY``'s tokens when it has none.

        Returns the format and how many tokens were added (the model's embeddings must then grow).
        """
        found = cls.from_tokenizer(tokenizer) or cls.teach_reserved(tokenizer)
        if found is not None:
            return found, 0
        family = FAMILIES[ADDED_FAMILY]
        added = tokenizer.add_special_tokens({"additional_special_tokens": list(family.sentinels)})
        fmt = cls.from_tokenizer(tokenizer)
        assert fmt is not None and fmt.family is family
        return fmt, added

    @classmethod
    def teach_reserved(cls, tokenizer: Any, ids: Sequence[int | None] | None = None) -> FimFormat | None:
        """Mark the tokenizer as taught a reserved-token family whose sentinels it has (a build, or a GGUF
        whose ``fim_*`` ids, given as ``ids`` (prefix, suffix, middle), are that family's); None if none."""
        vocab = tokenizer.get_vocab()
        for family in FAMILIES.values():
            sentinels = (family.prefix, family.suffix, family.middle)
            if not family.reserved or not all(token in vocab for token in sentinels):
                continue
            if ids is not None and list(ids) != [vocab[token] for token in sentinels]:
                continue
            tokenizer.init_kwargs[RESERVED_MARK] = family.name
            with contextlib.suppress(AttributeError):
                del tokenizer._codetune_fim
            return cls.from_tokenizer(tokenizer)
        return None

    @classmethod
    def require(cls, tokenizer: Any) -> FimFormat:
        """The tokenizer's format, or a CodetuneError saying that a suffix cannot be used."""
        found = cls.from_tokenizer(tokenizer)
        if found is None:
            raise no_fim_error()
        return found

    # --- encoding -----------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Ids of user text, with the tokenizer's usual leading space; sentinels spelled in it stay text."""
        if not text:
            return []
        return _encode(self.tokenizer, [text])[0]

    def encode_infill(self, text: str) -> list[int]:
        """Ids of a suffix or middle: no implicit leading space (Meta's ``encode_infilling``)."""
        return self.encode_many([text], infill=True)[0]

    def encode_many(self, texts: Sequence[str], *, infill: bool = False) -> list[list[int]]:
        """Batched :meth:`encode` (or :meth:`encode_infill`), in the order given."""
        if not texts:
            return []
        if not infill or not self.adds_leading_space:
            return [ids if text else [] for text, ids in zip(texts, _encode(self.tokenizer, list(texts)))]
        probe = self._probe_ids
        out = []
        for text, ids in zip(texts, _encode(self.tokenizer, [PROBE + t for t in texts]), strict=True):
            if not text:
                out.append([])
            elif ids[: len(probe)] == probe:
                out.append(ids[len(probe) :])
            else:  # the probe merged with the text (never seen so far): fall back to the plain ids
                out.append(self.encode(text))
        return out

    @property
    def adds_leading_space(self) -> bool:
        """Whether the tokenizer prepends a space to a text (SentencePiece's dummy prefix, Metaspace)."""
        if self._dummy_prefix is None:
            probe = self._probe_ids
            bare = _encode(self.tokenizer, [PROBE + "a"])[0]
            self._dummy_prefix = bare[: len(probe)] == probe and bare[len(probe) :] != self.encode("a")
        return self._dummy_prefix

    @functools.cached_property
    def _probe_ids(self) -> list[int]:
        return _encode(self.tokenizer, [PROBE])[0]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a generated middle: special tokens dropped, no leading space lost (``decode_infilling``)."""
        ids = list(ids)
        if not self.adds_leading_space:
            return self.tokenizer.decode(ids, skip_special_tokens=True)
        return decode_continuation(self.tokenizer, ids)

    # --- layouts ------------------------------------------------------------------------------------

    def prompt(self, prefix: str, suffix: str, context: RenderedContext | None = None) -> list[int]:
        """What serving sends: BOS? CONTEXT? <prefix> LEAD? PREFIX <suffix> SUFFIX <middle>.

        ``context`` (``codetune.context.render_for``) puts its head before the prefix sentinel and its
        lead (a target path, comment headers) at the start of the prefix text.
        """
        head, prefix = self._with_context(prefix, context)
        return self.prompt_ids(self.encode(prefix), self.encode_infill(suffix), head)

    def prompt_ids(self, prefix: Sequence[int], suffix: Sequence[int], head: Sequence[int] = ()) -> list[int]:
        """:meth:`prompt` from ids already encoded (prefix with :meth:`encode`, suffix with ``encode_infill``,
        ``head`` with :meth:`context_ids`)."""
        return [*self.bos_ids, *head, self.prefix_id, *prefix, self.suffix_id, *suffix, self.middle_id]

    def prompt_text(self, prefix: str, suffix: str) -> str:
        """:meth:`prompt` as text, for runtimes that take a text template and read special tokens in it.

        Ollama and llama.cpp tokenize such text with the sentinels recognised and BOS added by the
        tokenizer (the GGUF's ``add_bos_token``), so BOS is not spelled here. A tokenizer that puts a
        space before a text (SentencePiece's dummy prefix) gets one before the prefix, none before the
        suffix: Meta's ``encode`` / ``encode_infilling``, as :meth:`prompt` encodes them.
        """
        lead = " " if self.adds_leading_space else ""
        family = self.family
        return f"{family.prefix}{lead}{prefix}{family.suffix}{suffix}{family.middle}"

    def example(
        self, prefix: str, middle: str, suffix: str, spm: bool = False, context: RenderedContext | None = None
    ) -> list[int]:
        """What training learns: the prompt, the middle, then the family's end-of-middle token.

        PSM starts with exactly ``prompt(prefix, suffix, context)``. SPM is bigcode's variant 2
        (<prefix><suffix> S <middle> P M, Megatron-LM ``permute``), as Meta's ``suffix_first`` also is.
        """
        head, prefix = self._with_context(prefix, context)
        middle_ids, suffix_ids = self.encode_many([middle, suffix], infill=True)
        return self.example_ids(self.encode(prefix), middle_ids, suffix_ids, spm=spm, head=head)

    def example_ids(
        self,
        prefix: Sequence[int],
        middle: Sequence[int],
        suffix: Sequence[int],
        spm: bool = False,
        head: Sequence[int] = (),
    ) -> list[int]:
        """:meth:`example` from ids already encoded."""
        if spm:
            start = [*self.bos_ids, *head, self.prefix_id, self.suffix_id, *suffix, self.middle_id, *prefix]
            return [*start, *middle, self.end_id]
        return [*self.prompt_ids(prefix, suffix, head), *middle, self.end_id]

    def context_ids(self, context: RenderedContext | None) -> list[int]:
        """Ids of a rendered context's head: repository tokens by id, its texts encoded as user text."""
        return context_ids(self.tokenizer, context)

    def _with_context(self, prefix: str, context: RenderedContext | None) -> tuple[list[int], str]:
        if not context:
            return [], prefix
        return self.context_ids(context), context.lead + prefix

    @property
    def overhead(self) -> int:
        """Tokens an example adds to its text: BOS, three sentinels and the end token."""
        return len(self.bos_ids) + 4

    def split(self, ids: Sequence[int], decode: Callable[[list[int]], str] | None = None) -> FimPieces | None:
        """(prefix, middle, suffix) text back from a PSM or SPM example or prompt; None if it is not one.

        In SPM the prefix/middle boundary is not marked, so the middle comes back joined to the prefix
        (``prefix + middle`` is exact either way). ``decode`` defaults to the tokenizer's for the
        prefix and to :meth:`decode` for the pieces encoded without a leading space.
        """
        plain = decode or (lambda t: self.tokenizer.decode(t, clean_up_tokenization_spaces=False))
        infill = decode or self.decode
        body = list(ids)
        if self.bos_ids and body[:1] == self.bos_ids:
            body = body[1:]
        if not body or body[0] != self.prefix_id:
            return None
        body = body[1:]
        if body and body[-1] == self.end_id:
            body = body[:-1]
        try:
            s = body.index(self.suffix_id)
            m = body.index(self.middle_id, s + 1)
        except ValueError:
            return None
        if s == 0:  # SPM: <suffix> S <middle> P M
            return FimPieces("", plain(body[m + 1 :]), infill(body[s + 1 : m]))
        return FimPieces(plain(body[:s]), infill(body[m + 1 :]), infill(body[s + 1 : m]))

    # --- stops and repository format ----------------------------------------------------------------

    @property
    def stop_ids(self) -> frozenset[int]:
        """Ids that end a middle: the family's end token, EOS, and any sentinel (the model left the middle)."""
        ids = {self.end_id, self.prefix_id, self.suffix_id, self.middle_id, self.pad_id}
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        if self._repo is not None:
            ids.update(self._repo[:2])
        return frozenset(i for i in ids if i is not None)

    @property
    def stop_tokens(self) -> tuple[str, ...]:
        """The tokens of :attr:`stop_ids`, as strings (for engines that take stop strings)."""
        return tuple(self.tokenizer.convert_ids_to_tokens(sorted(self.stop_ids)))

    @property
    def sentinel_ids(self) -> frozenset[int]:
        """Every FIM or repository token id of the family in this tokenizer (none may reach a user)."""
        ids = {self.prefix_id, self.suffix_id, self.middle_id, self.pad_id}
        vocab = self.tokenizer.get_vocab()
        ids.add(_vocab_id(vocab, self.family.eot))
        if self._repo is not None:
            ids.update(self._repo[:2])
        return frozenset(i for i in ids if i is not None)

    @property
    def repo_tokens(self) -> RepoTokens | None:
        """The family's repository-context tokens in this tokenizer, or None when it has none."""
        if self._repo is None:
            return None
        return RepoTokens(*self._repo)


def _size(tokenizer: Any) -> int | None:
    try:
        return len(tokenizer)
    except TypeError:
        return None


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    try:
        # verbose=False: texts longer than the model are expected here (they are trimmed afterwards).
        out = tokenizer(texts, add_special_tokens=False, split_special_tokens=True, verbose=False)[
            "input_ids"
        ]
    except TypeError:
        out = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return [list(ids) for ids in out]


def token_ids(tokenizer: Any, tokens: Sequence[str]) -> dict[str, int]:
    """The ids of those of ``tokens`` that are whole tokens of the tokenizer (added ones included).

    Looked up one by one: ``get_vocab()`` copies the whole vocabulary (50-150k entries) on each call,
    which cost build and serve milliseconds per example with repository context.
    """
    if not hasattr(tokenizer, "convert_tokens_to_ids"):
        vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
        return {token: vocab[token] for token in tokens if token in vocab}
    found = {}
    for token in dict.fromkeys(tokens):
        index = tokenizer.convert_tokens_to_ids(token)
        if isinstance(index, int) and tokenizer.convert_ids_to_tokens(index) == token:
            found[token] = index
    return found


def context_ids(
    tokenizer: Any, context: RenderedContext | None, cache: dict[str, list[int]] | None = None
) -> list[int]:
    """Ids of a rendered context's head for any tokenizer (a plain prompt's context comes first too).

    ``cache`` (text piece -> ids) lets a caller that lays out many contexts of the same snippets
    tokenize each snippet once.
    """
    if not context or not context.head:
        return []
    vocab = token_ids(tokenizer, [piece for piece, is_token in context.head if is_token])
    known = {} if cache is None else cache
    texts = list(
        dict.fromkeys(piece for piece, is_token in context.head if not is_token and piece not in known)
    )
    known.update(zip(texts, _encode(tokenizer, texts) if texts else [], strict=True))
    ids: list[int] = []
    for piece, is_token in context.head:
        if is_token:
            if piece not in vocab:
                raise CodetuneError(f"the tokenizer has no repository token {piece}")
            ids.append(vocab[piece])
        else:
            ids += known[piece]
    return ids


def _probe_ids(tokenizer: Any) -> list[int]:
    """Ids of :data:`PROBE`, cached on the tokenizer."""
    cached = getattr(tokenizer, "_codetune_probe_ids", None)
    if cached is None:
        cached = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
        with contextlib.suppress(AttributeError):
            tokenizer._codetune_probe_ids = cached
    return cached


def decode_continuation(tokenizer: Any, ids: Sequence[int]) -> str:
    """Text of ids that continue a text (a completion, a middle), special tokens dropped.

    SentencePiece-style decoders (Llama, CodeLlama, DeepSeek) drop the leading space of the first
    token of a decoded string, which is right for a whole text and wrong for a continuation: decoding
    behind the probe character keeps it (Meta's ``decode_infilling``).
    """
    if not ids:
        return ""
    probe = _probe_ids(tokenizer)
    head = tokenizer.decode(probe, skip_special_tokens=True)
    text = tokenizer.decode(probe + list(ids), skip_special_tokens=True)
    return (
        text[len(head) :] if text.startswith(head) else tokenizer.decode(list(ids), skip_special_tokens=True)
    )


def bos_ids(tokenizer: Any) -> list[int]:
    """``[BOS]`` when the tokenizer starts an encoded text with it (Llama, Gemma: ``add_bos_token``), else
    ``[]``. Plain prompts and training rows start with it as the model was pretrained; Gemma 3 without
    it generates nonsense."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    cached = getattr(tokenizer, "_codetune_bos", None)
    if cached is None:
        ids = tokenizer("a", add_special_tokens=True)["input_ids"]
        cached = [bos] if ids[:1] == [bos] else []
        with contextlib.suppress(AttributeError):
            tokenizer._codetune_bos = cached
    return list(cached)


def no_fim_error() -> CodetuneError:
    """The error for a suffix sent to a model whose tokenizer has no FIM tokens."""
    names = ", ".join(FAMILIES)
    return CodetuneError(
        f"this model's tokenizer has no fill-in-the-middle tokens (families: {names}, or tokens added by "
        "a codetune run), so a suffix cannot be used"
    )
