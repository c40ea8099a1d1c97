"""Syntax validity of generations under tree-sitter (the Elm use case), per prompt and overall.

A generation is valid when ``prompt + completion`` parses without ERROR or MISSING nodes. The
truncation-aware variant first cuts the completion at the end of its last complete top-level node
(the Elm team saw most failures come from completions cut mid-expression by the token limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from codetune.languages import Language, get_language, parse


def _language(language: str | Language) -> Language:
    return language if isinstance(language, Language) else get_language(language)


def _python_compiles(text: str) -> bool:
    # tree-sitter-python accepts an empty block ("def f():" alone); the compiler does not.
    try:
        compile(text, "<generation>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


# Stricter checks for languages whose tree-sitter grammar is more lenient than the compiler.
STRICT_CHECKS = {"python": _python_compiles}


def is_valid(language: str | Language, text: str) -> bool:
    """Whether ``text`` parses without error nodes (and passes the language's strict check, if any)."""
    lang = _language(language)
    if parse(lang, text).root_node.has_error:
        return False
    strict = STRICT_CHECKS.get(lang.name)
    return strict(text) if strict else True


def truncate_to_complete(language: str | Language, prompt: str, completion: str) -> str | None:
    """The longest prefix of ``completion`` that ends a top-level node and leaves the whole valid.

    Candidate cuts are the ends of top-level nodes and the line ends before unindented lines, tried
    from the last one back. Returns None when no cut keeps any non-blank part of the completion.
    """
    lang = _language(language)
    text = prompt + completion
    if is_valid(lang, text):
        return completion
    start = len(prompt.encode("utf-8"))
    data = text.encode("utf-8")
    cuts = {child.end_byte for child in parse(lang, text).root_node.children if child.end_byte > start}
    offset = start
    for line in completion.encode("utf-8").splitlines(keepends=True):
        offset += len(line)
        if offset < len(data) and data[offset : offset + 1] not in (b" ", b"\t", b"\n", b"\r"):
            cuts.add(offset)
    for cut in sorted(cuts, reverse=True)[:32]:
        piece = data[start:cut].decode("utf-8", errors="ignore")
        if piece.strip() and is_valid(lang, prompt + piece):
            return piece
    return None


def syntax_validity(
    language: str | Language,
    prompts: Sequence[str],
    generations: Sequence[Sequence[str]],
    truncate: bool = False,
) -> dict[str, Any]:
    """Per-prompt successes/fails/rate and the overall rate over every generation (fractions 0..1)."""
    lang = _language(language)
    rows, ok_total, n_total = [], 0, 0
    for index, (prompt, samples) in enumerate(zip(prompts, generations)):
        ok = 0
        for completion in samples:
            if truncate:
                ok += truncate_to_complete(lang, prompt, completion) is not None
            else:
                ok += is_valid(lang, prompt + completion)
        rows.append(
            {
                "prompt": index,
                "successes": ok,
                "fails": len(samples) - ok,
                "rate": ok / len(samples) if samples else 0.0,
            }
        )
        ok_total += ok
        n_total += len(samples)
    return {"rate": ok_total / n_total if n_total else 0.0, "n": n_total, "rows": rows}
