"""Merge: the merged model's logits equal the adapter model's, for every preset; bad runs are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.helpers.train import ALL_PRESETS

from codetune.errors import CodetuneError
from codetune.files import read_json
from codetune.modeling.loading import load_model
from codetune.train.config import MergeConfig, TrainConfig
from codetune.train.merge import logits_of, merge
from codetune.train.recipe import train


def quick_run(preset: str, method: str, dataset: Path, out: Path) -> Path:
    cfg = TrainConfig(
        model=preset,
        dataset=dataset,
        method=method,
        out=out,
        max_steps=3,
        batch_tokens=128,
        batch_size=4,
        lr=2e-2,
        warmup_ratio=0.0,
        eval_every=3,
        adalora_init_r=4,
        adalora_target_r=2,
        adalora_tinit=0.0,
        adalora_tfinal=0.34,
    )
    return train(cfg).out


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_merge_equals_adapter(preset: str, dataset_of, seq2seq_dataset: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    dataset = seq2seq_dataset if preset == "tiny-t5" else dataset_of(preset)
    method = "adalora" if preset in {"tiny-phi", "tiny-t5", "tiny-codegen"} else "lora"
    run = quick_run(preset, method, dataset, tmp_path / "run")
    result = merge(MergeConfig(run=run, out=tmp_path / "merged"))
    assert result.summary["max_logit_diff"] < 1e-3

    # The merged folder is plain Hugging Face: transformers loads it without peft, with the run's tokenizer.
    merged_dir = tmp_path / "merged"
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "generation_config.json").is_file()
    auto = AutoModelForSeq2SeqLM if preset == "tiny-t5" else AutoModelForCausalLM
    merged = auto.from_pretrained(merged_dir).eval()
    assert len(AutoTokenizer.from_pretrained(merged_dir)) == merged.get_input_embeddings().num_embeddings
    ids = [5, 17, 230, 41, 9, 77]
    with torch.no_grad():
        adapted, plain, base = (logits_of(m, ids) for m in (load_model(str(run)), merged, load_model(preset)))
    torch.testing.assert_close(plain, adapted, atol=1e-3, rtol=1e-3)
    assert (plain - base).abs().max() > 1e-3  # the adapter changed something: equality is not trivial


def test_merge_refuses_full_runs_and_unfinished_ones(causal_dataset: Path, tmp_path: Path) -> None:
    run = quick_run("tiny-llama", "full", causal_dataset, tmp_path / "full")
    with pytest.raises(CodetuneError, match="already a plain model"):
        merge(MergeConfig(run=run, out=tmp_path / "m1"))
    with pytest.raises(CodetuneError, match="not a run folder"):
        merge(MergeConfig(run=tmp_path, out=tmp_path / "m2"))
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()


def test_merge_refuses_a_4bit_run_unless_dequantized(causal_dataset: Path, tmp_path: Path) -> None:
    run = quick_run("tiny-llama", "lora", causal_dataset, tmp_path / "run")
    manifest = read_json(run / "manifest.json")
    (run / "manifest.json").write_text(__import__("json").dumps({**manifest, "method": "qlora"}))
    with pytest.raises(CodetuneError, match="4-bit base"):
        merge(MergeConfig(run=run, out=tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_merge_cli_prints_the_difference(dataset_of, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from codetune.cli import app

    run = quick_run("tiny-gpt-bigcode", "lora", dataset_of("tiny-gpt-bigcode"), tmp_path / "run")
    done = CliRunner().invoke(app, ["merge", str(run), "--out", str(tmp_path / "merged")])
    assert done.exit_code == 0, done.output
    assert "max_logit_diff" in done.output


def test_kotlin_qlora_merge_passes_its_check_in_bf16(dataset_of, tmp_path: Path) -> None:
    """The Kotlin recipe's merge step (QLoRA, dequantize into bf16) on CPU: its base family, its LoRA
    settings, swapping only QLoRA for LoRA; the run is then marked as the QLoRA run it stands for."""
    import json

    import yaml

    recipe = yaml.safe_load((Path(__file__).parents[2] / "examples" / "kotlin-completion.yaml").read_text())
    lora = {k: recipe["train"][k] for k in ("lora_r", "lora_alpha", "lora_dropout", "lr")}
    assert recipe["train"]["method"] == "qlora" and recipe["merge"] == {"dequantize": True}
    cfg = TrainConfig(
        model="tiny-phi",
        dataset=dataset_of("tiny-phi"),
        method="lora",
        out=tmp_path / "run",
        max_steps=4,
        batch_tokens=128,
        warmup_ratio=0.0,
        eval_every=4,
        **lora,
    )
    run = train(cfg).out
    manifest = read_json(run / "manifest.json")
    (run / "manifest.json").write_text(json.dumps({**manifest, "method": "qlora"}))
    result = merge(MergeConfig(run=run, out=tmp_path / "merged", **recipe["merge"]))
    assert result.summary["max_logit_diff"] < MergeConfig().atol
    assert result.summary["dtype"] == "bfloat16"
    merged = load_model(str(tmp_path / "merged"))
    assert merged.dtype == torch.bfloat16
    adapted = load_model(str(run), dtype=torch.float32)
    ids = [5, 17, 230, 41, 9, 77]
    with torch.no_grad():
        # bf16 storage only rounds: within bf16's resolution of the fp32 adapter model.
        torch.testing.assert_close(logits_of(merged, ids), logits_of(adapted, ids), atol=0.1, rtol=0.02)
