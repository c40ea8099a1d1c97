"""The repository context builder: same repository only, never a held-out file, a token budget,
definitions and imports found, and each family's repository format."""

from __future__ import annotations

import pytest

from codetune.context import ContextOptions, RepoIndex, Snippet, build_context, render_context
from codetune.context.index import index_repositories
from codetune.context.render import LAYOUTS


def words(text: str) -> int:
    """A stand-in token count: whitespace-separated pieces (the builder only needs a counter)."""
    return len(text.split())


UTIL = "def scale(value, factor):\n    return value * factor\n\n\ndef offset(value):\n    return value + 1\n"
MAIN = "from util import scale\n\n\ndef area(width):\n    return scale(width, "


def corpus() -> list[dict]:
    return [
        {"repo": "a", "path": "util.py", "content": UTIL},
        {"repo": "a", "path": "main.py", "content": MAIN + "2)\n"},
        {"repo": "a", "path": "held_out.py", "content": "def scale_secret():\n    return 42\n"},
        {"repo": "b", "path": "util.py", "content": "def scale(x):\n    return -x  # repo b\n"},
        {"repo": "b", "path": "other.py", "content": "from util import scale\nscale(3)\n"},
    ]


def test_context_comes_from_the_target_repository_only_and_never_a_held_out_file():
    indexes = index_repositories(corpus(), exclude={"held_out.py"})
    snippets = build_context(indexes["a"], "main.py", MAIN, "2)\n", count_tokens=words)
    assert snippets, "the definition of scale should be found"
    assert {s.path for s in snippets} == {"util.py"}
    assert all("repo b" not in s.text for s in snippets)
    assert all("scale_secret" not in s.text for s in snippets)
    # exclusion also works at query time, for an index built with every file
    full = RepoIndex("a", {r["path"]: r["content"] for r in corpus() if r["repo"] == "a"})
    query = "def area():\n    return scale_secret("
    assert any(s.path == "held_out.py" for s in build_context(full, "main.py", query, count_tokens=words))
    options = ContextOptions(exclude=frozenset({"held_out.py"}))
    found = build_context(full, "main.py", query, count_tokens=words, options=options)
    assert all(s.path != "held_out.py" for s in found)


def test_imports_and_definitions_are_found():
    index = RepoIndex("a", {"pkg/util.py": UTIL, "pkg/main.py": MAIN, "pkg/unrelated.py": "x = 1\n"})
    assert index.imported_files("pkg/main.py", MAIN) == ["pkg/util.py"]
    only_defs = ContextOptions(strategies=("definitions",))
    (snippet,) = build_context(index, "pkg/main.py", MAIN, count_tokens=words, options=only_defs)
    assert snippet.source == "definitions" and snippet.text.startswith("def scale(value, factor)")
    ranked = index.search("scale(width, factor)", exclude={"pkg/main.py"})
    assert ranked and ranked[0][1].path == "pkg/util.py"


@pytest.mark.parametrize("budget", [5, 12, 40, 400])
def test_the_token_budget_is_respected(budget):
    files = {
        f"mod{i}.py": f"def helper_{i}(value):\n    return value * {i} + helper_{i + 1}(value)\n"
        for i in range(30)
    }
    index = RepoIndex("r", files)
    prefix = "result = " + " + ".join(f"helper_{i}(1)" for i in range(30))
    snippets = build_context(
        index, "main.py", prefix, count_tokens=words, options=ContextOptions(budget_tokens=budget)
    )
    used = sum(words(f"{s.path}\n{s.text}\n") for s in snippets)
    assert used <= budget
    if budget >= 40:
        assert snippets  # a real budget gets context


def test_client_snippets_come_first_and_count_against_the_budget():
    index = RepoIndex("a", {"util.py": UTIL})
    sent = [Snippet("open_tab.py", "OPEN = 1", "client")]
    snippets = build_context(index, "main.py", MAIN, count_tokens=words, client_snippets=sent)
    assert snippets[0] == sent[0]


def test_rendering_in_each_family_format():
    snippets = [Snippet("util.py", "def scale(v):\n    return v\n", "definitions")]
    starcoder2 = render_context(snippets, target_path="main.py", repo_name="a", layout=LAYOUTS["<repo_name>"])
    assert starcoder2 == "<repo_name>a<file_sep>util.py\ndef scale(v):\n    return v\n<file_sep>main.py\n"
    qwen = render_context(snippets, target_path="main.py", repo_name="a", layout=LAYOUTS["<|repo_name|>"])
    assert qwen == "<|repo_name|>a\n<|file_sep|>util.py\ndef scale(v):\n    return v\n<|file_sep|>main.py\n"
    plain = render_context(snippets, target_path="Main.kt", line_comment="//")
    assert plain == "// Path: util.py\n// def scale(v):\n//     return v\n// Path: Main.kt\n"
    assert render_context([], target_path="main.py") == ""
