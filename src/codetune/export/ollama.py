"""The Ollama Modelfile of an exported GGUF: its FIM template and stop tokens, from codetune.fim.

Ollama renders TEMPLATE as a Go template with ``.Prompt`` (the text before the cursor) and ``.Suffix``
(after it; empty for a plain completion), then tokenizes the result with the sentinels recognised and
BOS added as the GGUF says. The FIM branch is :meth:`codetune.fim.FimFormat.prompt_text`, so Ollama
sends what ``codetune serve`` sends; the stops are the family's :attr:`~codetune.fim.FimFormat.stop_tokens`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codetune.fim import FimFormat

PROMPT, SUFFIX = "{{ .Prompt }}", "{{ .Suffix }}"


def template(fmt: FimFormat | None) -> str:
    """The TEMPLATE: the family's FIM prompt when there is a suffix, the prompt alone otherwise."""
    if fmt is None:
        return PROMPT
    return f"{{{{ if .Suffix }}}}{fmt.prompt_text(PROMPT, SUFFIX)}{{{{ else }}}}{PROMPT}{{{{ end }}}}"


def stop_tokens(tokenizer: Any, fmt: FimFormat | None) -> list[str]:
    """What ends a completion: the FIM family's stops, or the tokenizer's EOS."""
    if fmt is not None:
        return list(fmt.stop_tokens)
    return [tokenizer.eos_token] if tokenizer.eos_token else []


def modelfile(gguf_file: Path, tokenizer: Any, fmt: FimFormat | None) -> str:
    """The Modelfile text for ``gguf_file`` (named relative to the Modelfile, which sits beside it)."""
    lines = [
        f"# Written by codetune export. Create the model with: ollama create NAME -f {gguf_file.stem}.Modelfile",
        f"FROM ./{gguf_file.name}",
        f'TEMPLATE """{template(fmt)}"""',
        *(f"PARAMETER stop {json.dumps(token, ensure_ascii=False)}" for token in stop_tokens(tokenizer, fmt)),
    ]
    return "\n".join(lines) + "\n"


def modelfile_path(gguf_file: Path) -> Path:
    """Where the Modelfile of ``gguf_file`` goes: beside it, ``NAME.Modelfile`` for ``NAME.gguf``."""
    return gguf_file.with_name(f"{gguf_file.stem}.Modelfile")
