"""Presets faithful to their families, and every FIM family end to end.

build (FIM, PSM and SPM) -> train (LoRA, a few steps) -> merge -> serve (a real server on 127.0.0.1,
the openai client, a row joining mid-flight) -> eval, through the stage APIs, for one preset per FIM
family (plus a model without FIM tokens, which the build gives codetune's).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from tests.helpers.fim import NO_PRESET

from codetune.fim import ADDED_FAMILY, FAMILIES, FimFormat
from codetune.modeling.loading import load_model, load_tokenizer
from codetune.modeling.presets import PRESETS, TOKENIZERS


def _gqa(config) -> bool:
    return 1 <= config.num_key_value_heads < config.num_attention_heads


def _adds_bos(name: str) -> bool:
    tok = load_tokenizer(name)
    return tok.bos_token_id is not None and tok("x = 1")["input_ids"][0] == tok.bos_token_id


def _reserved_fim(name: str) -> tuple[str, int] | None:
    """Gemma: no FIM of its own (a stock model never saw its reserved tokens as sentinels); a build
    teaches the `gemma` family on them, adding no token."""
    tok = load_tokenizer(name)
    if FimFormat.from_tokenizer(tok) is not None:
        return None
    fmt, added = FimFormat.ensure(tok)
    return fmt.family.name, added


# What each preset must keep of its real family (each line names the property a code path depends on).
FAITHFUL = {
    "tiny-gpt-bigcode": lambda c, n: c.multi_query and c.num_key_value_heads == 1,
    "tiny-starcoder2": lambda c, n: (
        _gqa(c)
        and c.sliding_window is not None
        and c.sliding_window < c.max_position_embeddings
        and c.use_bias
        and c.rope_parameters["rope_theta"] == 1_000_000.0
    ),
    "tiny-phi": lambda c, n: c.rope_parameters["partial_rotary_factor"] == 0.5,
    "tiny-codegen": lambda c, n: (
        c.rotary_dim < c.n_embd // c.n_head and FimFormat.from_tokenizer(load_tokenizer(n)) is None
    ),
    "tiny-llama": lambda c, n: (
        _gqa(c) and _adds_bos(n) and FimFormat.from_tokenizer(load_tokenizer(n)) is None
    ),
    "tiny-codellama": lambda c, n: (
        _gqa(c) and _adds_bos(n) and c.rope_parameters["rope_theta"] == 1_000_000.0
    ),
    "tiny-deepseek-coder": lambda c, n: _adds_bos(n) and c.rope_parameters["rope_type"] == "linear",
    "tiny-qwen2.5-coder": lambda c, n: _gqa(c) and not _adds_bos(n) and c.tie_word_embeddings,
    "tiny-gemma3": lambda c, n: (
        {"sliding_attention", "full_attention"} == set(c.layer_types)
        and c.layer_types[:6] == ["sliding_attention"] * 5 + ["full_attention"]
        and c.sliding_window < c.max_position_embeddings
        and c.num_key_value_heads == 1
        and c.head_dim * c.num_attention_heads != c.hidden_size
        and c.query_pre_attn_scalar == c.head_dim
        and c.tie_word_embeddings
        and _adds_bos(n)
        and _reserved_fim(n) == ("gemma", 0)
    ),
    "tiny-t5": lambda c, n: c.is_encoder_decoder,
}


def test_every_preset_has_its_family_checked():
    assert set(FAITHFUL) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_keeps_its_familys_code_paths(name):
    model = load_model(name)
    tokenizer = load_tokenizer(name)
    assert FAITHFUL[name](model.config, name), model.config
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    code = "def add(a, b):\n    return a + b  # ü\n"
    assert tokenizer.decode(tokenizer(code)["input_ids"], skip_special_tokens=True) == code


def test_starcoder2_window_really_slides():
    """Past the window the output differs from the same weights without one; inside it, it does not."""
    import torch

    model = load_model("tiny-starcoder2")
    window = model.config.sliding_window
    full = load_model("tiny-starcoder2")
    full.config.sliding_window = None
    for layer in full.model.layers:
        layer.self_attn.sliding_window = None
    short, long = torch.arange(10, 10 + window // 2)[None], torch.arange(10, 10 + window * 2)[None]
    with torch.no_grad():
        assert torch.allclose(model(short).logits, full(short).logits, atol=1e-5)
        assert not torch.allclose(model(long).logits[:, -1], full(long).logits[:, -1], atol=1e-3)


# --- end to end, one preset per family ---------------------------------------------------------------


def family_presets() -> list[tuple[str, str]]:
    """(family, preset) for every preset whose tokenizer carries a FIM family, plus one without FIM tokens.

    Read from the presets' tokenizer specs, so collecting the tests loads no tokenizer; the test
    itself checks that the built tokenizer is detected as that family.
    """
    rows = []
    for name, preset in PRESETS.items():
        tokens = set(TOKENIZERS[preset.tokenizer].extra())
        for family in FAMILIES.values():
            if not preset.seq2seq and {family.prefix, family.suffix, family.middle} <= tokens:
                rows.append((family.name, name))
    assert {family for family, _ in rows} == set(FAMILIES) - NO_PRESET
    return [*rows, (ADDED_FAMILY, "tiny-codegen")]


FAST = "tiny-codellama"  # the family whose layout differs most from StarCoder's runs in the default suite


def _params():
    rows = []
    for family, name in family_presets():
        marks = [] if name == FAST else [pytest.mark.slow]
        rows.append(pytest.param(family, name, id=f"{family}-{name}", marks=marks))
    return rows


def load_model_config(name: str) -> dict:
    """The preset's config without building it (a stand-in tokenizer gives the ids)."""

    class Ids:
        bos_token_id = eos_token_id = pad_token_id = 0

        def __len__(self) -> int:
            return 8

    return PRESETS[name].config(Ids()).to_dict()


def write_corpus(path: Path) -> Path:
    """{"code": ...} JSONL (the code_json format): ten small Python modules."""
    lines = []
    for i in range(10):
        body = "".join(
            f"def step_{i}_{j}(value, scale={j}):\n    total = value * scale\n    return total + {i}\n\n"
            for j in range(3)
        )
        lines.append(json.dumps({"code": f'"""Module {i}."""\n\n{body}'}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("family", "name"), _params())
def test_family_end_to_end(family, name, tmp_path):
    import openai
    from tests.helpers.server import start_server, stop_server

    from codetune.dataset.builder import build
    from codetune.dataset.config import BuildConfig
    from codetune.evaluate.config import EvalConfig
    from codetune.evaluate.runner import evaluate
    from codetune.train.config import MergeConfig, TrainConfig
    from codetune.train.merge import merge
    from codetune.train.recipe import train

    # build: every row FIM, half of them SPM
    dataset = tmp_path / "dataset"
    build(
        BuildConfig(
            corpus=write_corpus(tmp_path / "code.jsonl"),
            format="code_json",
            model=name,
            out=dataset,
            fim_rate=1.0,
            fim_spm_rate=0.5,
            max_length=128,
            valid_fraction=0.2,
            test_fraction=0.2,
            num_proc=1,
            decontam={"minhash": False},
        )
    )
    from datasets import load_from_disk

    saved = load_tokenizer(str(dataset / "tokenizer"))
    fmt = FimFormat.from_tokenizer(saved)
    assert fmt.family.name == family
    rows = load_from_disk(str(dataset))["train"]
    layouts = set()
    for ids, text in zip(rows["input_ids"], rows["text"], strict=True):
        assert ids[-1] == fmt.end_id and ids[: len(fmt.bos_ids) + 1] == [*fmt.bos_ids, fmt.prefix_id]
        layouts.add("spm" if ids[len(fmt.bos_ids) + 1] == fmt.suffix_id else "psm")
        back = fmt.split(ids)
        assert back is not None and text.startswith(back.text)
    assert layouts == {"psm", "spm"}

    # train -> merge
    run = tmp_path / "run"
    train(
        TrainConfig(
            model=name,
            dataset=dataset,
            out=run,
            method="lora",
            max_steps=2,
            batch_tokens=256,
            eval_every=2,
            save_every=2,
            eval_max_batches=1,
            precision="fp32",
        )
    )
    merged = tmp_path / "merged"
    merge(MergeConfig(run=run, out=merged))
    assert FimFormat.from_tokenizer(load_tokenizer(str(merged))).family.name == family

    # serve: a FIM row alone, then the same row joining a running one
    prefix, suffix = "def step(value, scale=2):\n    total = ", "\n    return total\n"
    server = start_server(model=str(merged), served_name="tuned")
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)

        def fim(max_tokens: int) -> str:
            return client.completions.create(
                model="tuned",
                prompt=prefix,
                suffix=suffix,
                max_tokens=max_tokens,
                temperature=0,
                extra_body={"postprocess": False},
            )

        alone = fim(8).choices[0].text
        long_started = threading.Event()
        results = {}

        def long_row() -> None:
            stream = client.completions.create(
                model="tuned", prompt="def long(value):\n", max_tokens=48, temperature=0, stream=True
            )
            for _ in stream:
                long_started.set()
            results["long"] = True

        runner = threading.Thread(target=long_row)
        runner.start()
        assert long_started.wait(60)
        joined = fim(8)  # joins the running batch mid-flight
        runner.join(60)
        assert results.get("long") and joined.choices[0].text == alone
        spelled = [saved.convert_ids_to_tokens(i) for i in fmt.sentinel_ids]
        assert not any(s in alone for s in spelled), alone
    finally:
        stop_server(server)

    # eval: the tuned model on held-out FIM items
    report = tmp_path / "report"
    evaluate(
        EvalConfig(
            models=[f"tuned={merged}"],
            dataset=dataset,
            out=report,
            tasks=["fim"],
            samples=2,
            max_new_tokens=4,
            batch_size=2,
            device="cpu",
        )
    )
    scores = json.loads((report / "report.json").read_text())["models"]["tuned"]
    assert any(key.startswith("fim_") for key in scores), scores
