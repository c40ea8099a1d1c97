"""What the vLLM path refuses before loading (runs without vllm), and one engine per GPU per rank."""

from __future__ import annotations

import json

import pytest
from tests.helpers.cli import assert_error_line

from codetune.errors import ConfigError
from codetune.generation.engines.vllm import check_vllm_model, pin_rank_gpu
from codetune.modeling.loading import ModelRef, resolve_model


def test_seq2seq_is_refused_clearly(tmp_path, cli):
    (tmp_path / "in.jsonl").write_text('{"prompt": "sort a list"}\n')
    proc = cli("generate", "--model", "tiny-t5", "--input", str(tmp_path / "in.jsonl"),
               "--out", str(tmp_path / "out.jsonl"), "--engine", "vllm")  # fmt: skip
    assert_error_line(proc, "seq2seq", "--engine hf")
    out = tmp_path / "out.jsonl"
    assert not out.exists() or not out.read_text()


def test_a_causal_model_passes():
    check_vllm_model(resolve_model("tiny-gpt-bigcode"))  # no refusal: vLLM may run it


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"modules_to_save": ["embed_tokens", "lm_head"]}, "embedding modules"),
        ({"trainable_token_indices": {"embed_tokens": [49152]}}, "trainable_token_indices"),
    ],
)
def test_adapters_with_added_token_rows_are_refused(tmp_path, settings, message):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **settings}))
    ref = ModelRef(resolve_model("tiny-gpt-bigcode").base, adapter)
    with pytest.raises(ConfigError, match=message):
        check_vllm_model(ref)


def test_an_adapter_whose_tokenizer_grew_is_refused(tmp_path):
    from codetune.modeling.loading import load_tokenizer

    base = resolve_model("tiny-gpt-bigcode")
    tokenizer = load_tokenizer(base)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<fim_new_a>", "<fim_new_b>"]})
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(base.base).vocab_size
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    ref = ModelRef(base.base, adapter, str(tmp_path / "tokenizer"))
    if len(tokenizer) <= vocab:
        pytest.skip("the preset's vocabulary has room for the added tokens")
    with pytest.raises(ConfigError, match="beyond the base vocabulary"):
        check_vllm_model(ref)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    check_vllm_model(ModelRef(base.base, plain))  # the same adapter without added tokens passes


def test_each_rank_gets_its_own_gpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    monkeypatch.setenv("LOCAL_RANK", "1")
    pin_rank_gpu()
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6"
    assert os.environ["LOCAL_RANK"] == "0"  # its GPU is cuda:0 to accelerate's barrier too
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4")
    with pytest.raises(ConfigError, match="one engine per GPU"):
        pin_rank_gpu()


@pytest.mark.gpu
def test_vllm_generates_on_one_gpu(tmp_path, cli):
    pytest.importorskip("vllm")
    (tmp_path / "in.jsonl").write_text('{"prompt": "def add(a, b):\\n    return"}\n')
    proc = cli("generate", "--model", "tiny-gpt-bigcode", "--input", str(tmp_path / "in.jsonl"),
               "--out", str(tmp_path / "out.jsonl"), "--engine", "vllm", "--max-new-tokens", "4")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out.jsonl").read_text())["new_tokens"] > 0
