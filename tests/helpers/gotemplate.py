"""Go's text/template, the subset Ollama's FIM templates use: {{ .Field }}, {{ if .Field }} / else / end.

Go semantics kept: a field renders as its string value; ``if`` is false for the empty string; ``{{-`` and
``-}}`` trim the white space beside the action. Anything else in an action is an error, so a template
that needs more of Go than this is noticed rather than rendered wrongly.
"""

from __future__ import annotations

import re

ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
FIELD = re.compile(r"^\.([A-Za-z_]\w*)$")


def _tokens(template: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    at = 0
    for match in ACTION.finditer(template):
        text = template[at : match.start()]
        if match.group(1):
            text = text.rstrip()
        if out and out[-1][0] == "trim-next":
            out.pop()
            text = text.lstrip()
        out.append(("text", text))
        out.append(("action", match.group(2)))
        if match.group(3):
            out.append(("trim-next", ""))
        at = match.end()
    tail = template[at:]
    if out and out[-1][0] == "trim-next":
        out.pop()
        tail = tail.lstrip()
    out.append(("text", tail))
    return out


def render(template: str, data: dict[str, str]) -> str:
    """Render ``template`` with ``data`` (e.g. {"Prompt": ..., "Suffix": ...}) as Go would."""
    tokens = _tokens(template)
    out, _ = _block(tokens, 0, data, emit=True)
    return out


def _value(expression: str, data: dict[str, str]) -> str:
    match = FIELD.match(expression)
    if match is None:
        raise ValueError(f"unsupported template action: {{{{ {expression} }}}}")
    return data.get(match.group(1), "")


def _block(tokens: list[tuple[str, str]], at: int, data: dict[str, str], emit: bool) -> tuple[str, int]:
    out = []
    while at < len(tokens):
        kind, value = tokens[at]
        if kind == "text":
            out.append(value if emit else "")
            at += 1
        elif value.startswith("if "):
            condition = bool(_value(value[3:].strip(), data))
            then, at = _block(tokens, at + 1, data, emit and condition)
            otherwise = ""
            if tokens[at][1] == "else":
                otherwise, at = _block(tokens, at + 1, data, emit and not condition)
            if tokens[at][1] != "end":
                raise ValueError("if without end")
            out.append(then + otherwise)
            at += 1
        elif value in ("else", "end"):
            return "".join(out), at
        else:
            out.append(_value(value, data) if emit else "")
            at += 1
    return "".join(out), at
