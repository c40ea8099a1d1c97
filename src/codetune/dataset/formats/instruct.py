"""``instruct``: instruction -> response pairs from JSONL, a doccano export, or docstring -> function."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from codetune.artifacts.corpus import is_corpus
from codetune.dataset.formats.base import Batch, Format, empty, origin
from codetune.dataset.inputs import read_corpus_docs, read_records
from codetune.errors import InputError


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


class Instruct(Format):
    """Instruction/response pairs from JSONL, a doccano export, or docstring -> function pairs."""

    name = "instruct"
    prompted = True
    repo_context = False

    def load(self, path: Path) -> list[dict[str, Any]]:
        opts = self.cfg.instruct
        self.dropped.clear()
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
        out = empty(self.columns())
        for i, instruction in enumerate(batch["instruction"]):
            prompt = render_prompt(instruction, tokenizer, opts.template, opts.use_chat_template)
            completion = batch["response"][i]
            out["prompt"].append(prompt)
            out["completion"].append(completion)
            out["text"].append(prompt + completion)
            origin(out, batch, i)
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
