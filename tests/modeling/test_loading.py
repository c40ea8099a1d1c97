from __future__ import annotations

import json

import pytest
from tests.helpers.cli import assert_clean_error

from codetune.errors import ModelLoadError
from codetune.fim import FAMILIES, FimFormat
from codetune.modeling.loading import load_model, load_tokenizer, resolve_model
from codetune.modeling.presets import PRESETS

EXPECTED_TYPES = {
    "tiny-gpt-bigcode": "GPTBigCodeForCausalLM",
    "tiny-starcoder2": "Starcoder2ForCausalLM",
    "tiny-phi": "PhiForCausalLM",
    "tiny-codegen": "CodeGenForCausalLM",
    "tiny-llama": "LlamaForCausalLM",
    "tiny-codellama": "LlamaForCausalLM",
    "tiny-deepseek-coder": "LlamaForCausalLM",
    "tiny-qwen2.5-coder": "Qwen2ForCausalLM",
    "tiny-gemma3": "Gemma3ForCausalLM",
    "tiny-t5": "T5ForConditionalGeneration",
}
# The FIM family each preset's own tokenizer carries (None: a build adds codetune's).
EXPECTED_FIM = {
    "tiny-gpt-bigcode": "starcoder",
    "tiny-starcoder2": "starcoder",
    "tiny-phi": None,
    "tiny-codegen": None,
    "tiny-llama": None,
    "tiny-codellama": "codellama",
    "tiny-deepseek-coder": "deepseek-coder",
    "tiny-qwen2.5-coder": "qwen2.5-coder",
    # Gemma 3 has no FIM tokens: a build teaches the `gemma` family on its reserved <unused*> tokens
    "tiny-gemma3": None,
    "tiny-t5": None,
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_real_architectures_with_their_familys_tokens(name):
    model = load_model(name)
    tokenizer = load_tokenizer(name)
    assert type(model).__name__ == EXPECTED_TYPES[name]
    fmt = FimFormat.from_tokenizer(tokenizer)
    assert (fmt and fmt.family.name) == EXPECTED_FIM[name]
    assert tokenizer.eos_token is not None and tokenizer.pad_token_id is not None
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    dropouts = {k: v for k, v in model.config.to_dict().items() if "drop" in k and isinstance(v, float)}
    assert dropouts and all(v == 0.0 for v in dropouts.values()), dropouts
    code = "def add(a, b):\n    return a + b\n"
    assert tokenizer.decode(tokenizer(code)["input_ids"], skip_special_tokens=True) == code


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_start_near_a_uniform_guess(name):
    """A random preset's first loss is near ln(vocab), as a real model's random init would give;
    a head drawn too wide (the untied T5 head at std 1.0 gave ~130) leaves a few CPU steps of
    LoRA generating nothing, so the recipe tests could not see their models learn."""
    import math

    import torch

    model, tokenizer = load_model(name), load_tokenizer(name)
    code = tokenizer(["def add(a, b):\n    return a + b\n"], return_tensors="pt")
    inputs = {"input_ids": code.input_ids, "attention_mask": code.attention_mask, "labels": code.input_ids}
    with torch.no_grad():
        loss = model(**inputs).loss.item()
    assert abs(loss - math.log(len(tokenizer))) < 2.0, (loss, math.log(len(tokenizer)))


def test_fim_families_detected_from_vocabulary():
    class Vocab:
        eos_token_id, bos_token_id = 0, None

        def __init__(self, tokens):
            self.tokens = tokens

        def get_vocab(self):
            return {t: i for i, t in enumerate(self.tokens)}

    for family in FAMILIES.values():
        found = FimFormat.from_tokenizer(Vocab(["a", *family.sentinels]))
        if family.reserved:  # every Gemma has these tokens: only a tokenizer a build taught uses them
            assert found is None, family.name
        else:
            assert found.family.name == family.name
    assert FimFormat.from_tokenizer(Vocab(["a", "b"])) is None


def test_ensure_fim_tokens_adds_when_missing():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokenizer = load_tokenizer("tiny-gpt-bigcode")
    assert FimFormat.ensure(tokenizer)[1] == 0
    plain = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"x": 0, "</s>": 1}, unk_token="x")), eos_token="</s>"
    )
    fmt, added = FimFormat.ensure(plain)
    assert (fmt.family.name, added) == ("starcoder", 4)
    assert FimFormat.from_tokenizer(plain).family.prefix == "<fim_prefix>"


def test_unknown_model_fails_fast_with_one_line(cli, tmp_path):
    with pytest.raises(ModelLoadError, match="cannot load model 'no-such-org/no-such-model'"):
        load_tokenizer("no-such-org/no-such-model")
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_model(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model or tokenizer folder"):
        resolve_model(str(tmp_path / "empty"))


def test_tokenizer_train_cli(cli, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"m{i}.py").write_text(f"def function_{i}(value):\n    return value * {i}\n" * 5)
    proc = cli("tokenizer", "train", str(src), "--vocab-size", "400", "--out", str(tmp_path / "tok"))
    assert proc.returncode == 0, proc.stderr
    tokenizer = load_tokenizer(str(tmp_path / "tok"))
    assert len(tokenizer) <= 400 and FimFormat.from_tokenizer(tokenizer) is not None
    assert json.loads((tmp_path / "tok" / "codetune_tokenizer.json").read_text())["texts"] == 20
    bad = cli("tokenizer", "train", str(tmp_path / "missing"), "--out", str(tmp_path / "tok2"))
    assert_clean_error(bad, "not found")
    assert not (tmp_path / "tok2").exists()


def test_an_adapter_merged_in_memory_gives_the_adapters_logits_without_its_layers(tmp_path):
    """eval loads a tuned model merged (load_model(merge=True)): LoRA layers cost the tiny model half its speed."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    folder = tmp_path / "adapter"
    config = LoraConfig(r=4, target_modules=["c_attn", "c_fc"], init_lora_weights=False)  # B not zero
    get_peft_model(load_model("tiny-gpt-bigcode"), config).save_pretrained(str(folder))
    ids = torch.tensor([[5, 17, 300, 41, 9, 120]])
    with torch.no_grad():
        base = load_model("tiny-gpt-bigcode")(ids).logits
        layered = load_model("tiny-gpt-bigcode", adapter=folder)
        merged = load_model("tiny-gpt-bigcode", adapter=folder, merge=True)
        assert isinstance(layered, PeftModel) and not isinstance(merged, PeftModel)
        assert not any("lora_" in name for name, _ in merged.named_parameters())
        assert torch.allclose(merged(ids).logits, layered(ids).logits, atol=1e-4)
        assert not torch.allclose(merged(ids).logits, base, atol=1e-3)  # the adapter is in the weights


def test_tokenizing_a_whole_file_longer_than_the_context_warns_of_no_indexing_error(capfd):
    """codetune tokenizes whole files and cuts them itself: transformers' "Token indices sequence
    length is longer than the specified maximum ... indexing errors" would be a false alarm."""
    from codetune.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer("tiny-gpt-bigcode")
    ids = tokenizer("value = compute(value) + 1\n" * 400)["input_ids"]
    assert len(ids) > tokenizer.model_max_length
    assert "Token indices sequence length" not in capfd.readouterr().err
