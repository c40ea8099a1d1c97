"""Render context snippets in the model family's own repository format.

* StarCoder2 (Lozhkov et al. 2024, "StarCoder 2 and The Stack v2", section 5, repository context):
  ``<repo_name>NAME<file_sep>PATH\\nCODE<file_sep>PATH\\nCODE...``. In a FIM prompt the target's
  path opens the prefix: ``...<file_sep><fim_prefix>TARGET\\nPREFIX<fim_suffix>SUFFIX<fim_middle>``;
  in a plain prompt it is ``<file_sep>TARGET\\n`` and then the prompt.
* Qwen2.5-Coder (QwenLM/Qwen2.5-Coder README, repository-level completion):
  ``<|repo_name|>NAME\\n<|file_sep|>PATH\\nCODE\\n<|file_sep|>TARGET\\n`` then the (FIM) prompt.
* Any other model: a comment header per file, as Tabby builds its prompts (``# Path: util.py``),
  in the target language's line comment, put at the start of the prefix (or of the plain prompt).

The repository tokens come from ``codetune.fim`` when a family has them; this module only lays out.
A rendered context has two parts (:class:`RenderedContext`): ``head`` goes before the FIM prefix
sentinel, made of text and repository tokens kept apart (so a token is inserted by id and user text
spelling one stays text); ``lead`` is text that opens the prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from codetune.context.builder import RepoContext, Snippet


@dataclass(frozen=True)
class RepoLayout:
    """A family's repository format: its two tokens, whether a newline ends the repository name, and
    whether the target's path goes inside the FIM prefix (StarCoder2) or before it (Qwen2.5-Coder)."""

    repo_token: str
    file_token: str
    newline_after_repo: bool
    target_in_prefix: bool = False


def _layouts() -> dict[str, RepoLayout]:
    from codetune.fim import FAMILIES

    return {
        name: RepoLayout(name, sep, family.repo_newline, family.repo_target_in_prefix)
        for family in FAMILIES.values()
        for name, sep in family.repo
    }


# keyed by the family's repo-name token; the tokens are the FIM registry's (codetune.fim)
LAYOUTS = _layouts()


def layout_for(tokenizer: object | None) -> RepoLayout | None:
    """The repository layout whose tokens this tokenizer has, if any."""
    if tokenizer is None:
        return None
    from codetune.fim import token_ids

    vocab = token_ids(
        tokenizer, [token for layout in LAYOUTS.values() for token in (layout.repo_token, layout.file_token)]
    )
    for token, layout in LAYOUTS.items():
        if token in vocab and layout.file_token in vocab:
            return layout
    return None


@dataclass(frozen=True)
class RenderedContext:
    """A context laid out for one prompt.

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


def display_name(repo: str) -> str:
    """The repository's name as the context spells it: its last path component.

    A corpus keys a repository by a unique id (the absolute path of a local folder, ``host/owner/name``
    of a URL) and ``serve --repo DIR`` knows a folder; both render the same ``name``, so that a
    model is served the repository line it was trained on, and a long path does not eat the budget.
    """
    return repo.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def render_parts(
    snippets: Sequence[Snippet],
    *,
    target_path: str,
    repo_name: str = "",
    layout: RepoLayout | None = None,
    line_comment: str | None = "#",
) -> RenderedContext:
    """The context split into what goes before the FIM prefix sentinel and what opens the prefix."""
    if not snippets:
        return RenderedContext()
    if layout is not None:
        repo, sep = (layout.repo_token, True), (layout.file_token, True)
        head: list[tuple[str, bool]] = [
            repo,
            (display_name(repo_name) + ("\n" if layout.newline_after_repo else ""), False),
        ]
        for snippet in snippets:
            head += [sep, (f"{snippet.path}\n{snippet.text.rstrip(chr(10))}\n", False)]
        head.append(sep)
        if layout.target_in_prefix:
            return RenderedContext(_merge(head), f"{target_path}\n")
        return RenderedContext(_merge([*head, (f"{target_path}\n", False)]), "")
    comment = line_comment or "#"
    blocks = []
    for snippet in snippets:
        body = "\n".join(
            f"{comment} {line}" if line else comment for line in snippet.text.rstrip("\n").split("\n")
        )
        blocks.append(f"{comment} Path: {snippet.path}\n{body}\n")
    return RenderedContext((), "".join(blocks) + f"{comment} Path: {target_path}\n")


def _merge(pieces: list[tuple[str, bool]]) -> tuple[tuple[str, bool], ...]:
    # empty texts dropped (no repository name); neighbouring texts never occur, tokens separate them
    return tuple(piece for piece in pieces if piece[0])


def render_context(
    snippets: Sequence[Snippet],
    *,
    target_path: str,
    repo_name: str = "",
    layout: RepoLayout | None = None,
    line_comment: str | None = "#",
) -> str:
    """Text to put before the target's prompt (empty when there are no snippets)."""
    return render_parts(
        snippets, target_path=target_path, repo_name=repo_name, layout=layout, line_comment=line_comment
    ).text


def render_for(tokenizer: Any, context: RepoContext | None) -> RenderedContext:
    """``context`` in the layout of the tokenizer's family, or as comment headers in the target's language."""
    if context is None or not context.snippets:
        return RenderedContext()
    from codetune.languages import language_for_path

    language = language_for_path(context.target_path) if context.target_path else None
    return render_parts(
        context.snippets,
        target_path=context.target_path,
        repo_name=context.repo_name,
        layout=layout_for(tokenizer),
        line_comment=(language.line_comment if language else None) or "#",
    )
