"""Dataset formats, one registered builder each: documents in, example texts out (tokenized later).

A format says where its documents come from (a corpus folder or JSON/JSONL records), whether its
examples are causal text, causal prompt/completion, or seq2seq source/target, and turns a batch of
documents into a batch of examples (``datasets.map(batched=True)`` calls it, possibly in workers).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from codetune.artifacts.corpus import is_corpus
from codetune.dataset.config import BuildConfig
from codetune.dataset.inputs import read_corpus_docs, read_records
from codetune.errors import InputError

Batch = dict[str, list[Any]]


class Format:
    """Base builder. ``kind``: causal or seq2seq; ``prompted``: rows carry prompt and completion."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "causal"
    prompted: ClassVar[bool] = False
    needs_tokenizer: ClassVar[bool] = False

    def __init__(self, cfg: BuildConfig) -> None:
        self.cfg = cfg
        # Tokens a later step adds to a text (FIM sentinels): blocks are cut that much shorter.
        self.reserve_tokens = 0

    def load(self, path: Path) -> list[dict[str, Any]]:
        """Documents with at least text, path, repo, language."""
        return read_corpus_docs(path)

    def check(self, docs: list[dict[str, Any]]) -> None:
        """Fail early on inputs this format cannot use."""

    def examples(self, batch: Batch, tokenizer: Any = None) -> Batch:
        raise NotImplementedError

    def columns(self) -> list[str]:
        if self.kind == "seq2seq":
            return ["source", "target", "path", "repo"]
        base = ["text", "path", "repo", "language"]
        return [*base, "prompt", "completion"] if self.prompted else base


FORMATS: dict[str, type[Format]] = {}


def register_format(name: str) -> Callable[[type[Format]], type[Format]]:
    """Class decorator adding a builder to the registry under ``name``."""

    def wrap(cls: type[Format]) -> type[Format]:
        cls.name = name
        FORMATS[name] = cls
        return cls

    return wrap


def get_format(cfg: BuildConfig) -> Format:
    if cfg.format not in FORMATS:
        raise InputError(f"unknown format {cfg.format!r}; known: {', '.join(sorted(FORMATS))}")
    return FORMATS[cfg.format](cfg)


def tokenize(tokenizer: Any, texts: list[str], *, offsets: bool = False) -> Any:
    """Batch-tokenize texts without special tokens.

    Texts longer than the model's maximum are expected here (they are cut into blocks or trimmed
    afterwards), so transformers' "sequence length is longer than the maximum" warning is off.
    """
    return tokenizer(texts, add_special_tokens=False, return_offsets_mapping=offsets, verbose=False)


def _empty(columns: list[str]) -> Batch:
    return {name: [] for name in columns}


# --- files -------------------------------------------------------------------------------------------


def split_long_texts(batch: Batch, columns: list[str], tokenizer: Any, max_length: int) -> Batch:
    """Cut texts longer than ``max_length`` tokens (EOS included) into consecutive blocks.

    Blocks end at a line end when one falls in the block's second half, so no line is torn apart
    without need; joined back in order they give the text exactly. Other columns are repeated.
    """
    out: Batch = {name: [] for name in columns}
    room = max_length - 1
    # A token covers at least one byte (byte-level BPE, byte fallback), so a text of no more bytes
    # than ``room`` never needs splitting; the encode stage tokenizes every text anyway, so only
    # longer ones are tokenized here as well.
    long_rows = [row for row, text in enumerate(batch["text"]) if len(text.encode("utf-8")) > room]
    encoded = (
        tokenize(tokenizer, [batch["text"][row] for row in long_rows], offsets=True)["offset_mapping"]
        if long_rows
        else []
    )
    offsets_of = dict(zip(long_rows, encoded, strict=True))
    for row, text in enumerate(batch["text"]):
        offsets = offsets_of.get(row, ())
        if len(offsets) <= room:
            pieces = [text]
        else:
            pieces, start_token, start_char = [], 0, 0
            while start_token < len(offsets):
                end_token = min(start_token + room, len(offsets))
                if end_token < len(offsets):
                    for cut in range(end_token, start_token + room // 2, -1):
                        if text[offsets[cut - 1][1] - 1 : offsets[cut - 1][1]] == "\n":
                            end_token = cut
                            break
                end_char = offsets[end_token][0] if end_token < len(offsets) else len(text)
                pieces.append(text[start_char:end_char])
                start_token, start_char = end_token, end_char
        for piece in pieces:
            if not piece.strip():
                continue
            for name in columns:
                out[name].append(piece if name == "text" else batch[name][row])
    return out


@register_format("files")
class Files(Format):
    """Whole files: ``text`` is the file, or blocks of it with ``overlong=split``; packed at train time."""

    def examples(self, batch: Batch, tokenizer: Any = None) -> Batch:
        keep = [i for i, text in enumerate(batch["text"]) if text.strip()]
        rows = {name: [batch[name][i] for i in keep] for name in self.columns()}
        if self.cfg.overlong == "split" and tokenizer is not None and rows["text"]:
            return split_long_texts(
                rows, self.columns(), tokenizer, self.cfg.max_length - self.reserve_tokens
            )
        return rows


# --- windows -----------------------------------------------------------------------------------------


@register_format("windows")
class Windows(Format):
    """Sliding prompt/completion windows with boundaries snapped to punctuation or line ends."""

    prompted = True
    needs_tokenizer = True

    def examples(self, batch: Batch, tokenizer: Any = None) -> Batch:
        opts = self.cfg.windows
        out = _empty(self.columns())
        encoded = tokenize(tokenizer, batch["text"], offsets=True)
        for i, text in enumerate(batch["text"]):
            starts = sorted({start for start, end in encoded["offset_mapping"][i] if end > start})
            for prompt, completion in windows(
                text,
                starts,
                opts.prompt_tokens,
                opts.completion_tokens,
                opts.stride,
                opts.snap_chars,
                opts.min_completion_tokens,
            ):
                out["prompt"].append(prompt)
                out["completion"].append(completion)
                out["text"].append(prompt + completion)
                for name in ("path", "repo", "language"):
                    out[name].append(batch[name][i])
        return out


def windows(
    text: str, starts: list[int], p: int, c: int, stride: int | None, snap: str, min_completion: int = 1
) -> list[tuple[str, str]]:
    """(prompt, completion) pairs over one text; ``starts`` are the character starts of its tokens.

    The completion start moves by ``stride`` tokens (None: completions tile the text); the prompt is
    the up-to-``p`` tokens before it. Both cut points snap back to just after a ``snap`` character.
    """
    n = len(starts)
    if n < 2:
        return []
    bounds = [*starts, len(text)]

    def snapped(target: int, low: int) -> int:
        """The latest token boundary in (low, target] that follows a snap character, else target."""
        if target >= n:
            return n
        for k in range(target, low, -1):
            pos = bounds[k]
            if text[pos - 1] in snap or text[pos] == "\n":
                return k
        return target

    # The first completion starts after P tokens, or earlier in a short text (so it still gets a pair).
    first = p if n > p + c else max(1, n * p // (p + c))
    cut = snapped(first, first // 2)
    pairs = []
    while cut < n - min_completion + 1:
        end = snapped(min(cut + c, n), cut + max(1, min(c, n - cut) // 2))
        prompt = text[bounds[max(cut - p, 0)] : bounds[cut]]
        completion = text[bounds[cut] : bounds[end]]
        if end - cut >= min_completion and completion.strip():
            pairs.append((prompt, completion))
        if end >= n:
            break
        cut = end if stride is None else snapped(cut + stride, cut)
    return pairs


# --- units -------------------------------------------------------------------------------------------


@register_format("units")
class Units(Format):
    """Tree-sitter syntax units with their doc comment, as text or as header -> body pairs."""

    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__(cfg)
        self.prompted = cfg.units.mode == "prompt"  # type: ignore[misc]

    def check(self, docs: list[dict[str, Any]]) -> None:
        from codetune.dataset.syntax import grammar_language

        languages = sorted({doc.get("language") or "" for doc in docs})
        if "" in languages:
            raise InputError("units needs each file's language, but the corpus has files without one")
        for name in languages:
            grammar_language(name)

    def examples(self, batch: Batch, tokenizer: Any = None) -> Batch:
        from codetune.dataset.syntax import syntax_units

        opts = self.cfg.units
        out = _empty(self.columns())
        for i, text in enumerate(batch["text"]):
            units = syntax_units(
                text,
                batch["language"][i],
                types=opts.types,
                doc=opts.doc,
                drop_comments=opts.drop_comments,
                drop_imports=opts.drop_imports,
                nested=opts.nested,
            )
            for unit in units:
                if len(unit.text.strip()) < opts.min_chars:
                    continue
                if self.prompted:
                    if not unit.completion.strip() or not unit.prompt.strip():
                        continue
                    out["prompt"].append(unit.prompt)
                    out["completion"].append(unit.completion)
                out["text"].append(unit.text)
                for name in ("path", "repo", "language"):
                    out[name].append(batch[name][i])
        return out


# --- instruct ----------------------------------------------------------------------------------------


def render_prompt(instruction: str, tokenizer: Any, template: str, use_chat: bool) -> str:
    """The model's chat template (user turn + generation prompt) when it has one, else ``template``."""
    if use_chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )
    return template.format(instruction=instruction)


DOC_MARKERS = re.compile(r"^\s*(/\*\*?|\*/|\*|//+|#+|--+|\{-\|?|-\}|\"\"\"|''')\s?", re.MULTILINE)
LEADING_COMMENT = re.compile(
    r"\A\s*(/\*.*?\*/|(?:[ \t]*//[^\n]*\n)+|(?:[ \t]*#[^\n]*\n)+|\{-.*?-\})\s*", re.DOTALL
)


def clean_doc(text: str) -> str:
    """Comment text without its markers (``/** */``, ``//``, ``#``, ``{-| -}``, quotes)."""
    lines = [DOC_MARKERS.sub("", line).rstrip() for line in text.strip().splitlines()]
    lines = [line.replace("*/", "").replace("-}", "").rstrip() for line in lines]
    return "\n".join(line for line in lines if line.strip()).strip().strip("\"'").strip()


def doccano_pair(record: dict[str, Any], opts: Any) -> tuple[str, str] | None:
    """(instruction, response) from one doccano export record.

    Span labels ``[start, end, label]`` named ``opts.doccano_instruction_label`` are the instruction
    and the rest of the text the response; a text-generation export (labels are strings) maps text
    -> first label; otherwise a leading comment of the text is the instruction and the code after it
    the response. doccano ``Comments`` are appended to the instruction.
    """
    text = record.get(opts.doccano_text_field) or record.get("data") or ""
    labels = record.get(opts.doccano_label_field) or record.get("labels") or []
    comments = [
        c.get("text", "") if isinstance(c, dict) else str(c)
        for c in record.get("Comments") or record.get("comments") or []
    ]
    instruction, response = "", text
    spans = [lab for lab in labels if isinstance(lab, list | tuple) and len(lab) == 3]
    if labels and all(isinstance(lab, str) for lab in labels):
        instruction, response = text, labels[0]
    elif spans:
        chosen = sorted((int(s), int(e)) for s, e, name in spans if name == opts.doccano_instruction_label)
        if chosen:
            instruction = "\n".join(clean_doc(text[s:e]) for s, e in chosen)
            pieces, pos = [], 0
            for s, e in chosen:
                pieces.append(text[pos:s])
                pos = e
            pieces.append(text[pos:])
            response = "".join(pieces).strip("\n")
    if not instruction:
        match = LEADING_COMMENT.match(text)
        if match:
            instruction, response = clean_doc(match.group(1)), text[match.end() :]
    notes = "\n".join(c for c in comments if c.strip())
    instruction = "\n".join(part for part in (instruction, notes) if part.strip())
    if not instruction.strip() or not response.strip():
        return None
    return instruction.strip(), response


def _field_text(value: Any) -> str | None:
    """A record field as text: a string as it is, a number as the file wrote it, null as empty;
    None for a list, an object or a boolean (their Python repr is not the text anyone meant)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)
    return None


@register_format("instruct")
class Instruct(Format):
    """Instruction/response pairs from JSONL, a doccano export, or docstring -> function pairs."""

    prompted = True
    needs_tokenizer = True

    def load(self, path: Path) -> list[dict[str, Any]]:
        opts = self.cfg.instruct
        self.dropped: Counter[str] = Counter()  # records left out, by reason (stats.json counts them)
        source = opts.source
        if source == "auto" and is_corpus(path):
            source = "docstrings"
        if source == "docstrings":
            return self._docstrings(read_corpus_docs(path))
        records = read_records(path)
        if source == "auto":
            first = records[0]
            looks_doccano = (
                opts.doccano_text_field in first
                and (opts.doccano_label_field in first or "Comments" in first or "comments" in first)
                and opts.instruction_field not in first
            )
            source = "doccano" if looks_doccano else "jsonl"
        docs = []
        for record in records:
            if source == "doccano":
                pair = doccano_pair(record, opts)
            else:
                if opts.instruction_field not in record or opts.response_field not in record:
                    raise InputError(
                        f"{record['_where']}: no {opts.instruction_field!r}/{opts.response_field!r} fields "
                        f"(has {', '.join(k for k in record if k != '_where')}); set instruct.instruction_field "
                        "and instruct.response_field"
                    )
                fields = [opts.instruction_field, opts.response_field]
                fields += [opts.input_field] if opts.input_field and record.get(opts.input_field) else []
                texts = [_field_text(record[field]) for field in fields]
                if None in texts:  # a list, an object or a boolean: no text to train on
                    self.dropped["not_text"] += 1
                    continue
                instruction = "\n\n".join(texts[:1] + texts[2:])
                pair = (instruction, texts[1])
            if pair is None or not pair[0].strip() or not pair[1].strip():
                self.dropped["empty_pair"] += 1
                continue
            docs.append(self._doc(pair, record["_where"], record["_where"].rsplit(":", 1)[0], ""))
        if not docs:
            raise InputError(f"no instruction/response pairs found in {path} (source: {source})")
        return docs

    @staticmethod
    def _doc(pair: tuple[str, str], path: str, repo: str, language: str) -> dict[str, Any]:
        return {
            "text": pair[0] + "\n" + pair[1],
            "instruction": pair[0],
            "response": pair[1],
            "path": path,
            "repo": repo,
            "language": language,
        }

    def _docstrings(self, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """docstring -> function pairs: units whose doc comment (or Python docstring) is the instruction."""
        from codetune.dataset.syntax import syntax_units

        docs = []
        for file in files:
            language = file.get("language") or ""
            try:
                units = syntax_units(file["text"], language, doc=True, nested=True)
            except InputError:
                continue
            for unit in units:
                pair = _doc_and_code(unit.text, language)
                if pair:
                    docs.append(self._doc(pair, file["path"], file["repo"], language))
        if not docs:
            raise InputError("no documented functions found in the corpus for docstring -> function pairs")
        return docs

    def examples(self, batch: Batch, tokenizer: Any = None) -> Batch:
        opts = self.cfg.instruct
        out = _empty(self.columns())
        for i, instruction in enumerate(batch["instruction"]):
            prompt = render_prompt(instruction, tokenizer, opts.template, opts.use_chat_template)
            completion = batch["response"][i]
            out["prompt"].append(prompt)
            out["completion"].append(completion)
            out["text"].append(prompt + completion)
            for name in ("path", "repo", "language"):
                out[name].append(batch[name][i])
        return out


PY_DOCSTRING = re.compile(r"(:\s*\n\s*)(\"\"\"|''')(.*?)\2[ \t]*\n?", re.DOTALL)


def _doc_and_code(unit_text: str, language: str) -> tuple[str, str] | None:
    """Split a unit into (its doc, the code without the doc), or None when it has no doc."""
    if language == "python":
        match = PY_DOCSTRING.search(unit_text)
        if match and match.start() < unit_text.find(":\n") + 3:
            doc = clean_doc(match.group(3))
            code = unit_text[: match.start(2)].rstrip(" \t") + unit_text[match.end() :]
            code = code.replace(":\n\n", ":\n", 1)
            return (doc, code) if doc and code.strip() else None
    match = LEADING_COMMENT.match(unit_text)
    if not match:
        return None
    doc = clean_doc(match.group(1))
    code = unit_text[match.end() :]
    return (doc, code) if doc and code.strip() else None


# --- seq2seq -----------------------------------------------------------------------------------------


@register_format("seq2seq")
class Seq2Seq(Format):
    """Source/target pairs for encoder-decoder models, e.g. CoNaLa ``intent + "\\n" + snippet -> rewritten``."""

    kind = "seq2seq"

    def load(self, path: Path) -> list[dict[str, Any]]:
        opts = self.cfg.seq2seq
        docs, skipped = [], 0
        for record in read_records(path):
            missing = [f for f in (*opts.source_fields, opts.target_field) if f not in record]
            if missing:
                raise InputError(
                    f"{record['_where']}: no field(s) {', '.join(map(repr, missing))}; set "
                    "seq2seq.source_fields / seq2seq.target_field"
                )
            target = record[opts.target_field]
            if not isinstance(target, str) or not target.strip():
                skipped += 1  # CoNaLa has rows without a rewritten intent
                continue
            source = opts.separator.join(str(record[f] or "") for f in opts.source_fields)
            docs.append(
                {
                    "text": source,
                    "source": source,
                    "target": target,
                    "path": record["_where"],
                    "repo": record["_where"].rsplit(":", 1)[0],
                    "language": "",
                }
            )
        if not docs:
            raise InputError(f"no source/target pairs in {path} ({skipped} records without a target)")
        self.skipped = skipped
        return docs

    def examples(self, batch: Batch, tokenizer: Any = None) -> Batch:
        return {name: batch[name] for name in self.columns()}


# --- code_json ---------------------------------------------------------------------------------------


@register_format("code_json")
class CodeJson(Format):
    """JSONL ``{"code": ...}`` records (PaddleNLP CodeGen's fine-tuning input), one text each."""

    def load(self, path: Path) -> list[dict[str, Any]]:
        if is_corpus(path):
            return read_corpus_docs(path)
        field = self.cfg.code_json.field
        docs = []
        for record in read_records(path):
            if field not in record:
                raise InputError(f"{record['_where']}: no {field!r} field; set code_json.field")
            code = record[field]
            if isinstance(code, str) and code.strip():
                docs.append(
                    {
                        "text": code,
                        "path": record["_where"],
                        "repo": record["_where"].rsplit(":", 1)[0],
                        "language": record.get("language") or "",
                    }
                )
        if not docs:
            raise InputError(f"no non-empty {field!r} records in {path}")
        return docs

    def examples(self, batch: Batch, tokenizer: Any = None) -> Batch:
        rows = {name: batch[name] for name in self.columns()}
        if self.cfg.overlong == "split" and tokenizer is not None and rows["text"]:
            return split_long_texts(
                rows, self.columns(), tokenizer, self.cfg.max_length - self.reserve_tokens
            )
        return rows
