"""The vLLM engine at parity with the HF one, checked without vllm: what it asks vLLM for, how it
finishes a row from vLLM's tokens, and what it refuses (before any model loads)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from tests.helpers.cli import assert_clean_error

from codetune.errors import ConfigError
from codetune.fim import decode_continuation
from codetune.generation.engines.vllm import (
    check_vllm_model,
    complete_row,
    vllm_llm_kwargs,
    vllm_sampling_kwargs,
)
from codetune.generation.params import PARAM_NAMES, SamplingParams
from codetune.generation.request import build_request
from codetune.generation.sequence import stop_token_ids
from codetune.modeling.loading import ModelRef, resolve_model

# codetune's name -> vLLM's, for the settings vLLM applies while decoding
TO_VLLM = {
    "max_new_tokens": "max_tokens",
    "min_new_tokens": "min_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "stop": "stop",
    "seed": "seed",
    "logprobs": "logprobs",
}
# settings codetune applies itself: patterns cut the decoded text; n copies are rows; beams are refused
BY_CODETUNE = {"truncate_before_pattern", "n", "num_beams"}


def test_every_sampling_setting_reaches_vllm_or_is_applied_by_codetune():
    assert set(TO_VLLM) | BY_CODETUNE == PARAM_NAMES  # a new setting must be placed in one of them
    params = SamplingParams(
        max_new_tokens=7,
        min_new_tokens=2,
        temperature=0.5,
        top_p=0.9,
        top_k=5,
        repetition_penalty=1.2,
        presence_penalty=0.5,
        frequency_penalty=-0.25,
        stop=["\n\n"],
        seed=3,
        logprobs=2,
    )
    kwargs = vllm_sampling_kwargs(params, copy=2, stop_ids={7, 1})
    for ours, theirs in TO_VLLM.items():
        if ours != "seed":
            assert kwargs[theirs] == getattr(params, ours), ours
    assert kwargs["seed"] == 5  # the third copy's seed, as the HF engines seed it
    assert kwargs["n"] == 1
    assert kwargs["stop_token_ids"] == [1, 7] and kwargs["ignore_eos"] is True  # exactly codetune's stops
    assert vllm_sampling_kwargs(SamplingParams(), 0, set())["top_k"] == -1  # both spell "off" their way
    assert vllm_sampling_kwargs(SamplingParams(), 0, set())["stop"] is None


def test_vllm_accepts_the_kwargs():
    vllm = pytest.importorskip("vllm")
    params = SamplingParams(max_new_tokens=4, temperature=0.7, stop=["\n"], seed=1, logprobs=1)
    taken = vllm.SamplingParams(**vllm_sampling_kwargs(params, 0, {0, 2}))
    # vLLM keeps each setting as given (it would silently clamp or rename one it does not take)
    assert (taken.max_tokens, taken.temperature, taken.stop, taken.seed) == (4, 0.7, ["\n"], 1)
    assert taken.n == 1 and taken.logprobs == 1 and set(taken.stop_token_ids) == {0, 2} and taken.ignore_eos


def test_beam_search_is_refused_clearly(tmp_path, cli):
    with pytest.raises(ConfigError, match="beam search"):
        vllm_sampling_kwargs(SamplingParams(num_beams=3), 0, set())
    (tmp_path / "in.jsonl").write_text('{"prompt": "def add(a, b):"}\n')
    proc = cli("generate", "--model", "tiny-gpt-bigcode", "--input", str(tmp_path / "in.jsonl"),
               "--out", str(tmp_path / "out.jsonl"), "--engine", "vllm", "--set", "num_beams=4")  # fmt: skip
    assert_clean_error(proc, "beam search", "--engine hf")
    assert proc.returncode == 2
    out = tmp_path / "out.jsonl"
    assert not out.exists() or not out.read_text()


def _vllm_output(tokenizer, raw: list[int], stop_ids: set[int], stops: list[str], limit: int):
    """What vLLM returns for a greedy row whose tokens would be ``raw``: up to and with the first stop
    id, or the token that completes a stop string, else ``limit`` tokens."""
    for k in range(1, min(len(raw), limit) + 1):
        if raw[k - 1] in stop_ids or any(s in decode_continuation(tokenizer, raw[:k]) for s in stops):
            return raw[:k], "stop"
    return raw[:limit], "length"


PROMPTS = [
    ("def add(a, b):\n    return", None),
    ("import os\nimport sys\n", None),
    ("class Point:\n    def __init__(self, x):\n", "\n        return self\n"),  # FIM
]


def test_rows_finish_as_on_the_hf_engine(tiny):
    """vLLM's tokens for a row, finished by the engine, give the HF engine's text, tokens and reason
    for the same request: stop strings, stop ids, token limits, client patterns and FIM."""
    from codetune.generation.engines import engine_for
    from codetune.generation.generator import complete_requests

    model, tok = tiny
    stop_ids = stop_token_ids(tok)
    engine = engine_for(model, tok, max_batch_size=4)

    def hf(params, prompt, suffix):
        request = build_request(tok, prompt, suffix, params)
        return next(iter(complete_requests(engine, [request])))[1][0]

    cases = 0
    for prompt, suffix in PROMPTS:
        raw_completion = hf(SamplingParams(max_new_tokens=24), prompt, suffix)
        raw = list(raw_completion.token_ids)
        if raw_completion.finish_reason == "stop":  # ended on a stop id, which vLLM returns too
            raw.append(tok.eos_token_id)
        text = raw_completion.text
        settings = [{"max_new_tokens": 10}, {"max_new_tokens": 24}]
        middle = text[len(text) // 2 : len(text) // 2 + 3]
        if middle.strip():
            settings.append({"max_new_tokens": 24, "stop": [middle]})
        lines = [line for line in text.splitlines()[1:] if line.strip()]
        if lines:
            settings.append(
                {"max_new_tokens": 24, "truncate_before_pattern": ["^" + re.escape(lines[0][:2])]}
            )
        for setting in settings:
            params = SamplingParams(**setting)
            expected = hf(params, prompt, suffix)
            request = build_request(tok, prompt, suffix, params)
            [seq] = request.new_sequences()
            ids, reason = _vllm_output(tok, raw, stop_ids, params.stop, params.max_new_tokens)
            complete_row(seq, ids, reason, stop_ids, tok)
            [got] = seq.completions()
            assert (got.text, got.finish_reason) == (expected.text, expected.finish_reason), setting
            if not params.truncate_before_pattern:  # a pattern stops HF early; vLLM runs on, then cuts
                assert got.token_ids == expected.token_ids, setting
            cases += 1
    assert cases >= 8


def test_a_stop_id_ends_the_row_without_joining_it(tiny):
    _, tok = tiny
    [seq] = build_request(tok, "x = 1", None, SamplingParams(max_new_tokens=8)).new_sequences()
    ids = tok("\ny = 2", add_special_tokens=False)["input_ids"]
    complete_row(seq, [*ids, tok.eos_token_id], "stop", stop_token_ids(tok), tok)
    [got] = seq.completions()
    assert got.token_ids == ids and got.text == "\ny = 2" and got.finish_reason == "stop"


def test_adapters_vllm_cannot_load_are_refused(tmp_path):
    base = resolve_model("tiny-gpt-bigcode").base
    cases = {
        "adalora": ({"peft_type": "ADALORA", "r": 8}, "ADALORA adapter"),
        "dora": ({"peft_type": "LORA", "r": 8, "use_dora": True}, "DoRA"),
        "huge": ({"peft_type": "LORA", "r": 1024}, "rank 1024"),
        "empty": (None, "no adapter_config.json"),
    }
    for name, (settings, message) in cases.items():
        adapter = tmp_path / name
        adapter.mkdir()
        if settings is not None:
            (adapter / "adapter_config.json").write_text(json.dumps(settings))
        with pytest.raises(ConfigError, match=message):
            check_vllm_model(ModelRef(base, adapter))


def test_lora_is_sized_for_the_adapter(tmp_path):
    base = resolve_model("tiny-gpt-bigcode")
    assert vllm_llm_kwargs(base) == {"model": base.base, "tokenizer": base.base}
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 16, "rank_pattern": {"c_attn": 24}})
    )
    ref = dataclasses.replace(base, adapter=adapter)
    check_vllm_model(ref)
    kwargs = vllm_llm_kwargs(ref)
    assert kwargs["enable_lora"] is True
    assert kwargs["max_lora_rank"] == 32  # the smallest rank vLLM builds that holds rank 24
