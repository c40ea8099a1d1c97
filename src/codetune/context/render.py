"""Render context snippets in the model family's own repository format.

* StarCoder2 (Lozhkov et al. 2024, "StarCoder 2 and The Stack v2", repository context):
  ``<repo_name>NAME<file_sep>PATH\\nCODE<file_sep>PATH\\nCODE...``; the target file follows as
  ``<file_sep>TARGET\\n`` and then its (FIM) prompt.
* Qwen2.5-Coder (QwenLM/Qwen2.5-Coder README, repository-level completion):
  ``<|repo_name|>NAME\\n<|file_sep|>PATH\\nCODE\\n<|file_sep|>TARGET\\n`` then the prompt.
* Any other model: a comment header per file, as Tabby builds its prompts (``# Path: util.py``),
  in the target language's line comment.

The repository tokens come from ``codetune.fim`` when a family has them; this module only lays out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from codetune.context.builder import Snippet


@dataclass(frozen=True)
class RepoLayout:
    """A family's repository format: its two tokens, and whether a newline ends the repository name."""

    repo_token: str
    file_token: str
    newline_after_repo: bool


# keyed by the family's repo-name token
LAYOUTS = {
    "<repo_name>": RepoLayout("<repo_name>", "<file_sep>", False),
    "<|repo_name|>": RepoLayout("<|repo_name|>", "<|file_sep|>", True),
}


def layout_for(tokenizer: object | None) -> RepoLayout | None:
    """The repository layout whose tokens this tokenizer has, if any."""
    if tokenizer is None:
        return None
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    for token, layout in LAYOUTS.items():
        if token in vocab and layout.file_token in vocab:
            return layout
    return None


def render_context(
    snippets: Sequence[Snippet],
    *,
    target_path: str,
    repo_name: str = "",
    layout: RepoLayout | None = None,
    line_comment: str | None = "#",
) -> str:
    """Text to put before the target's prompt (empty when there are no snippets)."""
    if not snippets:
        return ""
    if layout is not None:
        head = layout.repo_token + repo_name + ("\n" if layout.newline_after_repo else "")
        files = "".join(f"{layout.file_token}{s.path}\n{s.text.rstrip(chr(10))}\n" for s in snippets)
        return head + files + f"{layout.file_token}{target_path}\n"
    comment = line_comment or "#"
    blocks = []
    for snippet in snippets:
        body = "\n".join(
            f"{comment} {line}" if line else comment for line in snippet.text.rstrip("\n").split("\n")
        )
        blocks.append(f"{comment} Path: {snippet.path}\n{body}\n")
    return "".join(blocks) + f"{comment} Path: {target_path}\n"
