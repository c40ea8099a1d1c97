"""SamplingParams: one validation for every path; values that would poison a batch are refused."""

from __future__ import annotations

import pytest

from codetune.errors import ConfigError
from codetune.generation.params import InvalidParams, SamplingParams, sampling_params

BAD = [
    ({"seed": 18446744073709551616}, "seed"),
    ({"seed": -1}, "seed"),
    ({"temperature": 1e-45}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"repetition_penalty": 1e-45}, "repetition_penalty"),
    ({"repetition_penalty": float("inf")}, "repetition_penalty"),
    ({"top_p": 0.0}, "top_p"),
    ({"presence_penalty": 3.0}, "presence_penalty"),
    ({"stop": ["x" * 900]}, "stop"),
    ({"stop": [f"s{i}" for i in range(1000)]}, "stop"),
    ({"truncate_before_pattern": ["("]}, "truncate_before_pattern"),
    ({"truncate_before_pattern": ["a"] * 100}, "truncate_before_pattern"),
    ({"n": 3, "num_beams": 2}, "n"),
]


@pytest.mark.parametrize(("values", "field"), BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_out_of_range_settings_are_refused_naming_the_field(values, field):
    with pytest.raises(InvalidParams) as caught:
        SamplingParams(**values).check()
    assert caught.value.field == field


def test_edge_values_that_are_fine_pass():
    SamplingParams(seed=2**64 - 1, temperature=0.01, repetition_penalty=1.3, stop=["\n"] * 16).check()
    assert SamplingParams(seed=2**64 - 1, n=2).copy_seed(1) == 0  # wraps, never overflows


def test_the_keyword_builder_speaks_openai_and_codegen():
    params = sampling_params(max_tokens=5, stop="\n", decode_strategy="greedy_search", temperature=0.7)
    assert (params.max_new_tokens, params.stop, params.temperature) == (5, ["\n"], 0.0)
    with pytest.raises(ConfigError, match="unknown generation parameter"):
        sampling_params(temprature=0.3)
    with pytest.raises(ConfigError, match="seed"):
        sampling_params(seed=2**64)
