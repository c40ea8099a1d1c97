"""Completion clean-up for editor (FIM) requests, applied on every path: API, generate, eval, serve.

A request is single-line when the cursor sits inside a line: text follows it on the same line, or
the code before it on that line does not open a block. For a language with a tree-sitter grammar
(``codetune.languages``) the parse of prefix + suffix decides whether that code opens a block (a
``:`` or ``{`` followed by a body, an opener hidden behind a trailing comment, a comment-only line
that only wants its own end); without a grammar, or where the parse has errors at the cursor, the
line's last characters decide. A block completion stops where indentation falls back to (or below)
the line that opened it. Either way text repeating the start of the suffix is dropped, and no cut
leaves less than ``min_length`` non-blank characters.
"""

from __future__ import annotations

from typing import Any

BLOCK_OPENERS = (":", "{", "(", "[", "=>", "->", "=", "do", "then", "\\")
CLOSERS = ("}", ")", "]", "end")
OPEN_BRACKETS = ("(", "[", "{")
_BODY_TYPES = ("block", "body", "suite", "compound_statement", "statement_list", "declaration_list")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _is_body(node: Any) -> bool:
    return node is not None and any(part in node.type for part in _BODY_TYPES)


def opens_block_by_syntax(language: str | None, prefix: str, suffix: str) -> bool | None:
    """Whether the code before the cursor opens a block, by tree-sitter; None when it cannot tell."""
    if not language:
        return None
    from codetune.errors import CodetuneError
    from codetune.languages import get_language, parse

    try:
        lang = get_language(language)
        if lang.grammar is None:
            return None
        tree = parse(lang, prefix + suffix)
    except CodetuneError:
        return None
    head = prefix.rstrip()
    end = len(head.encode("utf-8")) - 1
    if end < 0:
        return None
    leaf = tree.root_node.descendant_for_byte_range(end, end)
    line_start = len(head[: head.rfind("\n") + 1].encode("utf-8"))
    if leaf is not None and "comment" in leaf.type:
        if leaf.start_byte <= line_start or not prefix.encode("utf-8")[line_start : leaf.start_byte].strip():
            return False  # a comment-only line: complete the comment, not a block
        leaf = leaf.prev_sibling
    if (
        leaf is None
        or leaf.is_missing
        or leaf.type == "ERROR"
        or (leaf.parent and leaf.parent.type == "ERROR")
    ):
        return None
    siblings = leaf.parent.children if leaf.parent is not None else []
    after = [n for n in siblings if n.start_byte >= leaf.end_byte and n.is_named and "comment" not in n.type]
    if after and _is_body(after[0]) and not leaf.is_named:
        return True
    if _is_body(leaf.parent) and leaf.parent.children and leaf.parent.children[0] == leaf:
        return True
    if leaf.parent is not None and leaf.parent.has_error:
        return None
    return leaf.type in OPEN_BRACKETS


class FimPostprocessor:
    """Cuts a FIM completion at the end of the line or block and drops what repeats the suffix."""

    def __init__(self, prefix: str, suffix: str, language: str | None = None, min_length: int = 1) -> None:
        self.prefix, self.suffix, self.language, self.min_length = prefix, suffix, language, min_length
        self.current_line = prefix.rsplit("\n", 1)[-1]
        self.suffix_line = suffix.split("\n", 1)[0]
        self.single_line = self._single_line()

    def _single_line(self) -> bool:
        before = self.current_line.strip()
        if self.suffix_line.strip():
            return True
        if not before:
            return False
        by_syntax = opens_block_by_syntax(self.language, self.prefix, self.suffix)
        if by_syntax is not None:
            return not by_syntax
        return not before.endswith(BLOCK_OPENERS)

    def _next_suffix_line(self) -> str:
        lines = [line.strip() for line in self.suffix.split("\n")]
        rest = lines[1:] if not lines[0] else lines
        return next((line for line in rest if line), "")

    def cut(self, text: str) -> int | None:
        """Where the completion should end, or None while it may go on."""
        found = self._cut(text)
        if found is not None and len(text[:found].strip()) < self.min_length:
            return None  # too short to offer: let the model go on
        return found

    def _cut(self, text: str) -> int | None:
        if self.single_line:
            first = text.lstrip("\n") if not self.current_line.strip() else text
            offset = len(text) - len(first)
            end = first.find("\n")
            while end >= 0 and len(first[:end].strip()) < self.min_length:
                end = first.find("\n", end + 1)
            return offset + end if end >= 0 else None
        line = self.current_line
        base = _indent(line)
        # On a whitespace-only line the block is the statements at the cursor's depth.
        floor = base if line.strip() else base - 1
        if not line.strip():
            above = next((ln for ln in reversed(self.prefix.split("\n")[:-1]) if ln.strip()), "")
            if above.rstrip().endswith(BLOCK_OPENERS):
                floor = max(floor, _indent(above))
        repeat = self._next_suffix_line()
        lines = text.split("\n")
        seen_content = bool(lines[0].strip())
        position = len(lines[0]) + 1
        for k, current in enumerate(lines[1:], start=1):
            complete = k < len(lines) - 1
            stripped = current.strip()
            if stripped:
                if seen_content and complete and repeat and stripped == repeat:
                    return position - 1
                if seen_content and _indent(current) <= floor:
                    if line.strip() and _indent(current) == base and stripped.startswith(CLOSERS):
                        # A closing bracket at the opener's depth belongs to the block.
                        return position + len(current) if complete else None
                    return position - 1
                seen_content = True
            position += len(current) + 1
        return None

    def finish(self, text: str) -> str:
        """Final touch: trailing blanks and an overlap with the start of the suffix go."""
        if not self.single_line:
            text = text.rstrip()
            # A last line that only begins the suffix's first line repeats it.
            rest = next((ln.strip() for ln in self.suffix.split("\n") if ln.strip()), "")
            head, _, last = text.rpartition("\n")
            if rest and last.strip() and rest.startswith(last.strip()) and head.strip():
                return head.rstrip()
            return text
        text = text.rstrip("\n")
        rest = self.suffix_line.strip()
        if rest:
            for k in range(len(rest), 0, -1):
                if text.endswith(rest[:k]) and (k == len(rest) or k >= 2):
                    return text[: len(text) - k]
        return text


def fim_postprocessor(
    prefix: str, suffix: str, language: str | None = None, min_length: int = 1
) -> FimPostprocessor:
    """The post-processor for one FIM request."""
    return FimPostprocessor(prefix, suffix, language, min_length)
