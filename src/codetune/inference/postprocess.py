"""Server-side completion clean-up for editor requests (what Tabby and Continue do in their clients).

A request is single-line when the cursor sits inside a line (text after it on the same line, or
text before it that does not open a block): the completion stops at the end of that line.
Otherwise it may fill a block and stops where indentation falls back to (or below) the level of the
line that opened it. In both modes text repeating the start of the suffix is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK_OPENERS = (":", "{", "(", "[", "=>", "->", "=", "do", "then", "\\")
CLOSERS = ("}", ")", "]", "end")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


@dataclass(frozen=True)
class FimPostprocessor:
    """Cuts a FIM completion at the end of the line or block and drops what repeats the suffix."""

    prefix: str
    suffix: str

    @property
    def current_line(self) -> str:
        return self.prefix.rsplit("\n", 1)[-1]

    @property
    def suffix_line(self) -> str:
        return self.suffix.split("\n", 1)[0]

    @property
    def single_line(self) -> bool:
        before = self.current_line.strip()
        if self.suffix_line.strip():
            return True
        return bool(before) and not before.endswith(BLOCK_OPENERS)

    def _next_suffix_line(self) -> str:
        lines = [line.strip() for line in self.suffix.split("\n")]
        rest = lines[1:] if not lines[0] else lines
        return next((line for line in rest if line), "")

    def cut(self, text: str) -> int | None:
        """Where the completion should end, or None while it may go on."""
        if self.single_line:
            first = text.lstrip("\n") if not self.current_line.strip() else text
            offset = len(text) - len(first)
            end = first.find("\n")
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
        """Final touch: trailing blanks and an overlap with the suffix's first line go."""
        text = text.rstrip() if not self.single_line else text.rstrip("\n")
        rest = self.suffix_line.strip()
        if self.single_line and rest:
            for k in range(len(rest), 0, -1):
                if text.endswith(rest[:k]) and (k == len(rest) or k >= 2):
                    return text[: len(text) - k]
        return text


def fim_postprocessor(prefix: str, suffix: str) -> FimPostprocessor:
    """The post-processor for one FIM request."""
    return FimPostprocessor(prefix, suffix)
