"""The Python API: CodeModel.complete and codetune.pipeline("code-generation")."""

from __future__ import annotations

import pytest

import codetune
from codetune.errors import ConfigError


@pytest.fixture(scope="module")
def code_model():
    return codetune.CodeModel("tiny-gpt-bigcode", device="cpu")


def test_complete_matches_the_engine(code_model, tiny):
    from codetune.generation.api import generate
    from codetune.generation.params import SamplingParams

    model, tok = tiny
    expected = generate(model, tok, ["def add(a, b):\n"], SamplingParams(max_new_tokens=5))[0]
    assert code_model.complete("def add(a, b):\n", max_tokens=5, temperature=0) == expected


def test_complete_with_suffix_fills_the_middle_on_one_line(code_model):
    text = code_model.complete("x = compute(", suffix=")\nprint(x)\n", max_new_tokens=6)
    assert "\n" not in text
    raw = code_model.complete("x = compute(", suffix=")\nprint(x)\n", max_new_tokens=6, postprocess=False)
    assert raw and raw != code_model.complete("x = compute(", max_new_tokens=6)


def test_codegen_style_parameters_and_unknown_ones(code_model):
    import re

    import torch

    prompt, pattern = "# hello\n", r"\n\n^#"
    text = code_model.complete(
        prompt, max_length=6, decode_strategy="greedy_search", truncate_before_pattern=[pattern]
    )
    # CodeGen's meaning, spelled out: 6 greedy tokens, cut before the pattern's first (multi-line) match.
    tokenizer = code_model.tokenizer
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = code_model.model.generate(
            **ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    greedy = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    found = re.search(pattern, greedy, re.MULTILINE)
    assert text == (greedy[: found.start()] if found else greedy)
    with pytest.raises(ConfigError, match="unknown generation parameter"):
        code_model.complete("x", temprature=0.3)


def test_pipeline(code_model):
    pipe = codetune.pipeline("code-generation", model=code_model, max_new_tokens=4)
    single = pipe("def f():\n")
    assert isinstance(single, str)
    assert pipe(["def f():\n", "import"])[0] == single
    with pytest.raises(ConfigError):
        codetune.pipeline("translation", model=code_model)
