"""The repository context builder: same repository only, never a held-out file, a token budget,
definitions and imports found, and each family's repository format."""

from __future__ import annotations

import pytest

from codetune.context import (
    ContextOptions,
    RepoContext,
    RepoIndex,
    Snippet,
    build_context,
    render_context,
    render_for,
    render_parts,
)
from codetune.context.index import index_repositories
from codetune.fim import FAMILIES, FimFormat, repo_layouts
from codetune.generation.params import SamplingParams
from codetune.generation.request import build_request


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


def test_bm25_chunks_carry_their_okapi_bm25_score():
    import math
    from collections import Counter

    from codetune.context.index import identifier_tokens

    files = {  # one chunk each (shorter than a chunk's stride)
        "geo.py": "def scale(width, factor):\n    return width * factor\n",
        "units.py": "FACTOR = 2\nwidth = 3\n",
        "noise.py": "def unrelated():\n    return None\n",
    }
    index = RepoIndex("a", files)
    query = "total = scale(width, FACTOR)"
    only_bm25 = ContextOptions(strategies=("bm25",))
    snippets = build_context(index, "main.py", query, count_tokens=words, options=only_bm25)

    # Okapi BM25 (k1=1.2, b=0.75) over identifier tokens, written out here independently of the index
    docs = {path: Counter(identifier_tokens(text)) for path, text in files.items()}
    mean = sum(sum(d.values()) for d in docs.values()) / len(docs)

    def bm25(doc: Counter) -> float:
        total = 0.0
        for term in set(identifier_tokens(query)) & doc.keys():
            df = sum(term in d for d in docs.values())
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            tf = doc[term]
            total += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * sum(doc.values()) / mean))
        return total

    expected = {path: bm25(doc) for path, doc in docs.items() if bm25(doc) > 0}
    assert {s.path for s in snippets} == set(expected) == {"geo.py", "units.py"}
    for snippet in snippets:
        assert snippet.source == "bm25" and snippet.score == pytest.approx(expected[snippet.path])
    assert [s.score for s in snippets] == sorted(expected.values(), reverse=True)
    # found by name, not ranked: no score
    only_defs = ContextOptions(strategies=("definitions",))
    assert [
        s.score for s in build_context(index, "main.py", query, count_tokens=words, options=only_defs)
    ] == [None]


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
    starcoder2 = render_context(
        snippets, target_path="main.py", repo_name="a", layout=repo_layouts()["<repo_name>"]
    )
    assert starcoder2 == "<repo_name>a<file_sep>util.py\ndef scale(v):\n    return v\n<file_sep>main.py\n"
    qwen = render_context(
        snippets, target_path="main.py", repo_name="a", layout=repo_layouts()["<|repo_name|>"]
    )
    assert qwen == "<|repo_name|>a\n<|file_sep|>util.py\ndef scale(v):\n    return v\n<|file_sep|>main.py\n"
    plain = render_context(snippets, target_path="Main.kt", line_comment="//")
    assert plain == "// Path: util.py\n// def scale(v):\n//     return v\n// Path: Main.kt\n"
    assert render_context([], target_path="main.py") == ""


# --- prompt assembly: the same ids in a served request and a training example -------------------------

CONTEXT = RepoContext(
    (
        Snippet("pkg/util.py", "def scale(value, factor):\n    return value * factor\n", "definitions"),
        Snippet("pkg/shapes.py", "class Square:\n    side = 2\n", "bm25"),
    ),
    target_path="pkg/main.py",
    repo_name="acme/geometry",
)
PREFIX = "from pkg.util import scale\n\n\ndef area(width):\n    return "
MIDDLE = "scale(width, width)"
SUFFIX = "\n\n\nprint(area(3))\n"


def test_starcoder2_puts_the_target_path_inside_the_fim_prefix():
    parts = render_parts(
        CONTEXT.snippets[:1], target_path="main.py", repo_name="a", layout=repo_layouts()["<repo_name>"]
    )
    assert parts.head == (
        ("<repo_name>", True),
        ("a", False),
        ("<file_sep>", True),
        ("pkg/util.py\ndef scale(value, factor):\n    return value * factor\n", False),
        ("<file_sep>", True),
    )
    assert parts.lead == "main.py\n"
    qwen = render_parts(
        CONTEXT.snippets[:1], target_path="main.py", repo_name="a", layout=repo_layouts()["<|repo_name|>"]
    )
    assert qwen.lead == "" and qwen.head[-2:] == (("<|file_sep|>", True), ("main.py\n", False))
    header = render_parts(CONTEXT.snippets[:1], target_path="Main.kt", line_comment="//")
    assert header.head == () and header.lead.endswith("// Path: Main.kt\n")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_training_example_starts_with_what_a_request_sends(family, tokenizers):
    tok = tokenizers[family]
    fmt = FimFormat.from_tokenizer(tok)
    request = build_request(tok, PREFIX, SUFFIX, SamplingParams(max_new_tokens=8), repo_context=CONTEXT)
    example = fmt.example(PREFIX, MIDDLE, SUFFIX, context=render_for(tok, CONTEXT))
    assert example[: len(request.prompt_ids)] == request.prompt_ids
    assert example[-1] == fmt.end_id and request.context_snippets == list(CONTEXT.snippets)
    tokens = tok.convert_ids_to_tokens(request.prompt_ids)
    at_prefix = request.prompt_ids.index(fmt.prefix_id)
    before, after = tok.decode(request.prompt_ids[:at_prefix]), tok.decode(request.prompt_ids[at_prefix:])
    family_tokens = FAMILIES[family].repo
    if fmt.repo_tokens is not None:
        # after BOS, before the prefix sentinel, in the family's own repository tokens
        name, sep = fmt.repo_tokens.repo_name_token, fmt.repo_tokens.file_sep_token
        assert tokens[len(fmt.bos_ids)] == name
        # StarCoder2 opens the prefix with the target's path; Qwen2.5-Coder ends the head with it
        target_in_prefix = FAMILIES[family].repo_target_in_prefix
        assert (tokens[at_prefix - 1] == sep) == target_in_prefix
        assert after.startswith(
            ("<fim_prefix>pkg/main.py\n" if target_in_prefix else fmt.family.prefix) + "from"
        )
        assert tokens.count(sep) == 3 and "def scale" in before and "def scale" not in after
        assert (name, sep) in family_tokens
    else:
        # comment headers open the prefix, as Tabby's prompts do
        assert at_prefix == len(fmt.bos_ids)
        assert "# Path: pkg/util.py\n# def scale(value, factor):" in after
        assert "# Path: pkg/main.py\nfrom pkg.util import scale" in after
    assert fmt.decode(example[len(request.prompt_ids) : -1]) == MIDDLE
    # without context, the request is the plain FIM prompt it always was
    assert build_request(tok, PREFIX, SUFFIX).prompt_ids == fmt.prompt(PREFIX, SUFFIX)


def test_the_exact_prompt_of_each_repository_format(tokenizers):
    one = RepoContext(CONTEXT.snippets[:1], "main.py", "a")
    code = "pkg/util.py\ndef scale(value, factor):\n    return value * factor\n"
    starcoder = build_request(tokenizers["starcoder"], "x = ", "\n", repo_context=one).prompt_text
    assert (
        starcoder
        == f"<repo_name>a<file_sep>{code}<file_sep><fim_prefix>main.py\nx = <fim_suffix>\n<fim_middle>"
    )
    qwen = build_request(tokenizers["qwen2.5-coder"], "x = ", "\n", repo_context=one).prompt_text
    assert qwen == (
        f"<|repo_name|>a\n<|file_sep|>{code}<|file_sep|>main.py\n<|fim_prefix|>x = <|fim_suffix|>\n<|fim_middle|>"
    )


def test_context_goes_first_when_the_prompt_is_too_long(tokenizers):
    tok = tokenizers["qwen2.5-coder"]
    params = SamplingParams(max_new_tokens=4)
    full = build_request(tok, PREFIX, SUFFIX, params, repo_context=CONTEXT)
    one = build_request(tok, PREFIX, SUFFIX, params, repo_context=CONTEXT.keep(1))
    bare = build_request(tok, PREFIX, SUFFIX, params)
    assert len(full.prompt_ids) > len(one.prompt_ids) > len(bare.prompt_ids)
    # one token short of the whole context: the last snippet goes, the prefix stays whole
    fits_one = build_request(
        tok, PREFIX, SUFFIX, params, context=len(full.prompt_ids) + 3, repo_context=CONTEXT
    )
    assert fits_one.prompt_ids == one.prompt_ids
    assert fits_one.context_snippets == [CONTEXT.snippets[0]] and fits_one.context_snippets_dropped == 1
    assert not fits_one.truncated and fits_one.prompt_tokens_sent == len(full.prompt_ids)
    # no room for any snippet: all go, then the prefix is trimmed as without context
    tight = build_request(tok, PREFIX, SUFFIX, params, context=len(bare.prompt_ids) + 2, repo_context=CONTEXT)
    assert tight.context_snippets == [] and tight.context_snippets_dropped == 2
    assert tight.truncated and len(tight.prompt_ids) <= len(bare.prompt_ids) - 2
    assert tight.usage_details()["context_snippets_dropped"] == 2


def test_a_plain_prompt_gets_the_context_before_it(tokenizers):
    tok = tokenizers["codellama"]  # no repository tokens: comment headers
    request = build_request(tok, PREFIX, repo_context=CONTEXT)
    # the prompt as sent: BOS, then the context before the file
    assert request.prompt_ids[0] == tok.bos_token_id
    assert tok.decode(request.prompt_ids[1:]).startswith("# Path: pkg/util.py\n# def scale(value, factor):")
    assert request.prompt_text.endswith("# Path: pkg/main.py\n" + PREFIX)
    qwen = build_request(tokenizers["qwen2.5-coder"], PREFIX, repo_context=CONTEXT)
    assert qwen.prompt_text.startswith("<|repo_name|>geometry\n<|file_sep|>pkg/util.py\n")
    assert qwen.prompt_text.endswith("<|file_sep|>pkg/main.py\n" + PREFIX)
    with pytest.raises(Exception, match="text prompt"):
        build_request(tok, [1, 2, 3], repo_context=CONTEXT)


def test_bm25_search_of_a_large_index_is_okapi_bm25_ranked_with_exclusions():
    """A repository big enough that common terms are scored as dense rows and the k-th best is
    bounded by group maxima: the ranking is still Okapi BM25's, exclusions and ties included."""
    import math
    import random
    from collections import Counter

    from codetune.context.index import DENSE_MIN_CHUNKS, identifier_tokens

    rng = random.Random(7)
    common = ["value", "total", "items", "result"]
    rare = [f"name{k}" for k in range(400)]
    files = {}
    for f in range(300):
        lines = []
        for _ in range(72):
            words = rng.sample(common, rng.randint(0, 3)) + rng.sample(rare, rng.randint(0, 2))
            lines.append(" = ".join(words) or "pass")
        files[f"pkg/mod{f:03d}.py"] = "\n".join(lines) + "\n"
    index = RepoIndex("r", files)
    assert len(index.chunks) >= DENSE_MIN_CHUNKS and index._dense  # the dense path is taken

    docs = [Counter(identifier_tokens(chunk.text)) for chunk in index.chunks]
    mean = sum(sum(d.values()) for d in docs) / len(docs)
    df = Counter(term for d in docs for term in d)

    def bm25(doc: Counter, query: set[str]) -> float:
        total = 0.0
        for term in query & doc.keys():
            idf = math.log(1 + (len(docs) - df[term] + 0.5) / (df[term] + 0.5))
            tf = doc[term]
            total += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * sum(doc.values()) / mean))
        return total

    for query_text in ["value total", "name3 value items", "result = name17 + name250 + total", "nothing"]:
        excluded = set(rng.sample(sorted(files), 40))
        query = set(identifier_tokens(query_text))
        scored = [
            (round(bm25(doc, query), 9), chunk.path, chunk.start_line)
            for doc, chunk in zip(docs, index.chunks, strict=True)
            if chunk.path not in excluded
        ]
        expected = sorted((-score, path, line) for score, path, line in scored if score > 0)[:8]
        found = index.search(query_text, k=8, exclude=excluded)
        assert [(-round(score, 9), c.path, c.start_line) for score, c in found] == expected, query_text
