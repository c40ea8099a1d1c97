"""Repository context: what other files of the same repository a completion needs, within a token budget.

One builder, shared by build (training examples), eval and serve, so that a model is trained on the
context the server will give it. Sources of context, in order of trust:

1. snippets the editor sent (llama.cpp ``input_extra``, Tabby's declarations and snippets, open files);
2. files the target imports, and the definitions of names used near the cursor;
3. chunks most similar to the text around the cursor (BM25 over identifier tokens, like llama.vim's
   chunk ring and Tabby's snippet search).

The result is rendered in the model family's own repository format (see ``render``).
"""

from codetune.context.builder import ContextOptions, RepoContext, Snippet, build_context
from codetune.context.index import RepoIndex
from codetune.context.render import RenderedContext, render_context, render_for, render_parts

__all__ = [
    "ContextOptions",
    "RenderedContext",
    "RepoContext",
    "RepoIndex",
    "Snippet",
    "build_context",
    "render_context",
    "render_for",
    "render_parts",
]
