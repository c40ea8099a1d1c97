"""The engine registry, row by row: every engine that runs on a CPU gives, through the one request
path (Generator), the greedy text transformers' own ``model.generate`` gives; the names configs use
resolve to registry rows; an engine's refusals come before its model loads."""

from __future__ import annotations

import pytest

from codetune.errors import ConfigError
from codetune.generation.engines import ALIASES, ENGINES, engine_class, engine_for, load_engine
from codetune.generation.generator import Generator
from codetune.generation.params import SamplingParams
from codetune.generation.request import GenerationRequest
from codetune.modeling.loading import resolve_model

PROMPTS = ["def add(a, b):\n    return", "import os\n\n\ndef main():\n", "x = [1, 2, 3]\nfor item in x:\n"]
CPU_ENGINES = sorted(name for name, cls in ENGINES.items() if not cls.gpu_only and not cls.gguf_only)


def reference(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """transformers' greedy text for ``prompt``, decoded as a continuation."""
    import torch

    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(
            **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    if tokenizer.eos_token_id in new:
        new = new[: new.index(tokenizer.eos_token_id)]
    return tokenizer.decode(new, skip_special_tokens=True)


def test_the_registry_has_the_engines_every_path_names():
    assert {"continuous", "static", "vllm", "llamacpp"} <= set(ENGINES)
    assert all(target in ENGINES for target in ALIASES.values())
    assert engine_class("hf") is ENGINES["continuous"] and engine_class("micro") is ENGINES["static"]
    with pytest.raises(ConfigError, match="unknown engine 'nope'"):
        engine_class("nope")


@pytest.mark.parametrize("name", CPU_ENGINES)
def test_each_cpu_engine_gives_the_greedy_text_of_model_generate(name, tiny):
    model, tokenizer = tiny
    engine = engine_for(model, tokenizer, name, max_batch_size=2)
    assert type(engine) is ENGINES[name]
    generator = Generator(engine, context=engine.context_length)
    params = SamplingParams(max_new_tokens=8)
    out = dict(generator.complete([GenerationRequest(p, params=params) for p in PROMPTS]))
    assert [out[i][0].text for i in range(len(PROMPTS))] == [
        reference(model, tokenizer, p, 8) for p in PROMPTS
    ]


@pytest.mark.parametrize("name", CPU_ENGINES)
def test_each_cpu_engine_loads_its_model_from_a_reference(name):
    from codetune.modeling.loading import load_tokenizer

    ref = resolve_model("tiny-gpt-bigcode")
    engine = load_engine(name, ref, load_tokenizer(ref), device="cpu")
    assert type(engine) is ENGINES[name] and engine.context_length and not engine.seq2seq


def test_seq2seq_models_get_static_batches_whatever_engine_is_asked(tiny_t5):
    model, tokenizer = tiny_t5
    assert type(engine_for(model, tokenizer, "continuous")) is ENGINES["static"]


def test_vllm_refuses_before_loading_and_is_made_from_a_reference(tiny):
    model, tokenizer = tiny
    with pytest.raises(ConfigError, match="beam search"):
        engine_class("vllm").check(resolve_model("tiny-gpt-bigcode"), SamplingParams(num_beams=2))
    with pytest.raises(ConfigError, match="seq2seq"):
        engine_class("vllm").check(resolve_model("tiny-t5"), SamplingParams())
    with pytest.raises(ConfigError, match="loads its own model"):
        engine_for(model, tokenizer, "vllm")


def test_llamacpp_refuses_transformers_models_and_beams(tiny):
    # its greedy text against llama.cpp's own: tests/serve/test_llamacpp.py (needs llama-cpp-python)
    model, tokenizer = tiny
    with pytest.raises(ConfigError, match="reads a GGUF file itself"):
        engine_for(model, tokenizer, "llamacpp")
    with pytest.raises(ConfigError, match="beam search"):
        engine_class("llamacpp").check(None, SamplingParams(num_beams=2))


def test_llamacpp_without_llama_cpp_python_is_one_clear_error(monkeypatch, tiny):
    import sys

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="needs llama-cpp-python: pip install llama-cpp-python"):
        load_engine("llamacpp", "model.gguf", tiny[1])
