"""FIM prompts come from the tokenizer (per-family layouts: tests/test_fim.py) and editor-style post-processing."""

from __future__ import annotations

import pytest

from codetune.errors import CodetuneError
from codetune.fim import FimFormat
from codetune.generation.postprocess import fim_postprocessor
from codetune.generation.request import chat_prompt


def fim_prompt(tokenizer, prefix: str, suffix: str) -> list[int]:
    """The family's FIM prompt, as every request builds it."""
    return FimFormat.require(tokenizer).prompt(prefix, suffix)


def test_sentinels_come_from_the_tokenizer_not_the_model_name(tiny):
    _, tok = tiny
    ids = fim_prompt(tok, "x = ", "\n")
    assert ids[0] == tok.convert_tokens_to_ids("<fim_prefix>") and ids[-1] == tok.convert_tokens_to_ids(
        "<fim_middle>"
    )
    # User text that spells a sentinel stays text: only the layout inserts sentinel ids.
    spelled = fim_prompt(tok, "<fim_middle>", "")
    assert spelled.count(tok.convert_tokens_to_ids("<fim_middle>")) == 1


def test_no_fim_tokens_is_a_clear_error():
    from codetune.modeling.loading import load_tokenizer

    with pytest.raises(CodetuneError, match="fill-in-the-middle"):
        fim_prompt(load_tokenizer("tiny-codegen"), "a", "b")


def test_plain_chat_template_when_the_tokenizer_has_none(tiny):
    _, tok = tiny
    text, stops = chat_prompt(tok, [{"role": "user", "content": "hi"}])
    assert text.endswith("### Assistant:\n") and "hi" in text and stops


def cut(prefix, suffix, completion):
    post = fim_postprocessor(prefix, suffix)
    position = post.cut(completion)
    return post.finish(completion if position is None else completion[:position])


CASES = [
    # single line: text after the cursor on the same line
    ("x = foo(", ")\nprint(x)\n", "a, b)\nprint(y)\n", "a, b"),
    # single line: a statement in progress
    ("    total = ", "\n    return total\n", "sum(values)\n    return total\n", "sum(values)"),
    # block after an opener, ended by a dedent
    (
        "def f(x):",
        "\n",
        "\n    y = x + 1\n    return y\n\ndef g():\n    pass",
        "\n    y = x + 1\n    return y",
    ),
    # block on an empty indented line, stops at the suffix's first line
    ("def f(x):\n    ", "\n    return z\n", "z = x * 2\n    return z\n", "z = x * 2"),
    # braces: the closing line at the opener's depth belongs to the block unless the suffix has it
    ("if (ok) {", "\n", "\n  run();\n}\nnext();", "\n  run();\n}"),
    ("if (ok) {", "\n}\n", "\n  run();\n}\nnext();", "\n  run();"),
]


@pytest.mark.parametrize(("prefix", "suffix", "completion", "expected"), CASES)
def test_postprocess_stops_at_line_or_block_and_drops_suffix_repeats(prefix, suffix, completion, expected):
    assert cut(prefix, suffix, completion) == expected


def test_tree_sitter_sees_an_opener_behind_a_trailing_comment():
    prefix, suffix = "class Point(Base):  # a 2-D point", "\n\nx = Point()\n"
    completion = "\n    def __init__(self):\n        self.x = 0\nx = 1\n"
    # Indentation alone reads the comment's end, thinks the cursor is inside a line, cuts the block.
    assert cut(prefix, suffix, completion) == "\n    def __init__(self):"
    post = fim_postprocessor(prefix, suffix, language="python")
    assert not post.single_line
    position = post.cut(completion)
    assert post.finish(completion[:position]) == "\n    def __init__(self):\n        self.x = 0"


def test_tree_sitter_keeps_a_comment_line_on_one_line():
    prefix, suffix = "def f(x):\n    # steps:", "\n    return x\n"
    completion = " add one\n    x += 1\n    return x\n"
    assert not fim_postprocessor(prefix, suffix).single_line  # the ':' looks like an opener
    post = fim_postprocessor(prefix, suffix, language="python")
    assert post.single_line
    assert post.finish(completion[: post.cut(completion)]) == " add one"


def test_a_cut_never_leaves_less_than_the_minimum_length():
    post = fim_postprocessor("def f(x):\n    ", "\n    return z\n")
    assert post.cut("\n") is None  # nothing yet: the model goes on
    assert post.cut("z = 1\n    return z\n") == len("z = 1")


def test_a_block_does_not_end_with_the_start_of_the_suffix():
    post = fim_postprocessor("if ok:", "\n    return total\n")
    assert post.finish("\n    total = 1\n    return") == "\n    total = 1"
    assert post.finish("\n    total = 1\n    print(total)") == "\n    total = 1\n    print(total)"
