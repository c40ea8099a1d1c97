"""`codetune train --dry-run` / `codetune run RECIPE --dry-run`: the real models, no weights, no network."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from codetune.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails, as on a machine without network; the hub counts as offline."""
    from huggingface_hub import constants

    from codetune.modeling import loading

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loading.hub_reachable.cache_clear()
    yield
    loading.hub_reachable.cache_clear()


def invoke(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["codetune", *args])
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_airscript_adalora_table_offline_as_the_write_up_reports(tmp_path):
    """The acceptance command, as a user runs it: offline, an empty hub cache, nothing downloaded."""
    from tests.helpers.cli import run_cli

    home = tmp_path / "hf-home"
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub")}
    args = ("train", "--model", "bigcode/starcoderbase-1b", "--method", "adalora", "--dry-run")
    result = run_cli(*args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    # The AirScript write-up (seeds/000): 8,332,416 trainable of 1,145,539,808, 0.7274%.
    assert "8,332,416" in result.stdout and "1,145,539,808" in result.stdout, result.stdout
    assert "0.7274" in result.stdout
    assert "c_attn" in result.stdout and "c_fc" in result.stdout  # target modules: every linear layer
    assert not any(home.rglob("*")), "a dry run must download nothing"
    assert not any(tmp_path.iterdir()), "and writes nothing"


def test_json_carries_the_same_plan(no_network, monkeypatch, capsys):
    code, out, err = invoke(
        monkeypatch,
        capsys,
        "train",
        "-m",
        "bigcode/starcoderbase-1b",
        "--method",
        "adalora",
        "--dry-run",
        "--json",
    )
    assert code == 0, err
    plan = json.loads(out)
    assert plan["parameters"]["trainable_params"] == 8_332_416
    assert plan["parameters"]["total_params"] == 1_145_539_808
    assert plan["config_source"]["origin"] == "bundled"
    assert plan["target_modules"] == ["c_attn", "c_fc", "c_proj"]
    methods = {row["method"]: row for row in plan["memory"]}
    assert set(methods) >= {"lora", "adalora", "qlora", "full"}
    # 4-bit base < 16-bit base < fp32 full fine-tuning; the adapters' optimizer state is tiny next to full's.
    assert methods["qlora"]["weights_gib"] < methods["lora"]["weights_gib"] < methods["full"]["weights_gib"]
    assert methods["full"]["optimizer_gib"] > 100 * methods["adalora"]["optimizer_gib"]
    assert plan["tokens"]["per_optimizer_step"] == 4096  # TrainConfig's batch_tokens, one micro-batch


# Published sizes of the base models (parameters), to catch a bundled config with a wrong shape.
PUBLISHED = {
    "bigcode/starcoderbase-1b": (1_145_539_808 - 8_332_416, 0.0),  # the write-up: all minus trainable
    "microsoft/phi-1_5": (1.42e9, 0.01),  # hub model card: 1.42B params
    "bigcode/starcoder2-3b": (3.03e9, 0.01),  # 3.03B
    "Salesforce/codegen-350M-mono": (3.5e8, 0.05),  # "350M"
}


@pytest.mark.parametrize("recipe", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_recipe_dry_runs_with_its_real_model(recipe, no_network, monkeypatch, capsys):
    from codetune.config import load_recipe

    written = load_recipe(EXAMPLES / recipe)
    code, out, err = invoke(monkeypatch, capsys, "run", str(EXAMPLES / recipe), "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["model"] == written.train.model and not written.train.model.startswith("tiny-")
    assert plan["config_source"]["origin"] == "bundled"
    assert plan["method"] == written.train.method
    params = plan["parameters"]
    base = params["total_params"] - (0 if written.train.method == "full" else params["trainable_params"])
    if written.train.model in PUBLISHED:
        expected, tolerance = PUBLISHED[written.train.model]
        assert abs(base - expected) <= tolerance * expected, (base, expected)
    if written.train.method == "full":
        assert params["trainable_params"] == params["total_params"]
    else:
        assert 0 < params["trainable_params"] < 0.05 * params["total_params"]
        wanted = written.train.target_modules
        assert plan["target_modules"] == (wanted or plan["target_modules"]) and plan["target_modules"]
    tokens = plan["tokens"]
    per_micro = (
        written.train.batch_tokens
        if written.train.packing == "packed" and plan["architecture"] != "T5ForConditionalGeneration"
        else written.train.batch_size * written.build.max_length
    )
    assert tokens["micro_batch"] == per_micro
    assert tokens["per_optimizer_step"] == per_micro * written.train.grad_accum
    row = next(r for r in plan["memory"] if r["method"] == written.train.method)
    assert row["total_gib"] > row["weights_gib"] > 0 and row["activations_gib"] > 0


def test_meta_counts_equal_a_real_model_wrapped_for_training(no_network):
    """The dry run counts what training trains: the same method on real weights gives the same table."""
    from codetune.modeling.loading import load_model
    from codetune.train.config import TrainConfig
    from codetune.train.dryrun import plan
    from codetune.train.methods import get_method
    from codetune.train.targets import parameter_table

    for method in ("adalora", "lora", "full"):
        cfg = TrainConfig(model="tiny-gpt-bigcode", method=method, max_steps=50)
        planned = plan(cfg)
        assert planned["config_source"]["origin"] == "preset"
        real = parameter_table(get_method(method).wrap(load_model("tiny-gpt-bigcode"), cfg, 50))
        assert planned["parameters"] == real, method


def test_estimate_follows_the_configured_batch_and_checkpointing(no_network):
    from codetune.train.config import TrainConfig
    from codetune.train.dryrun import plan

    def row(**fields):
        report = plan(
            TrainConfig(model="Salesforce/codegen-350M-mono", method="lora", max_steps=10, **fields)
        )
        return report, next(r for r in report["memory"] if r["method"] == "lora")

    small, one = row(batch_tokens=2048)
    big, two = row(batch_tokens=4096, grad_accum=4)
    assert big["tokens"]["per_optimizer_step"] == 4 * 4096 and small["tokens"]["per_optimizer_step"] == 2048
    assert two["activations_gib"] == pytest.approx(2 * one["activations_gib"], rel=0.02)
    assert two["weights_gib"] == one["weights_gib"]  # weights do not depend on the batch
    _, checkpointed = row(batch_tokens=4096, gradient_checkpointing=True)
    assert checkpointed["activations_gib"] < two["activations_gib"] / 2  # the logits stay
    padded, _ = row(packing="pad", batch_size=8)
    assert padded["tokens"]["micro_batch"] == 8 * padded["tokens"]["row_length"]
    assert padded["assumptions"], "a padded plan without the build's max_length says what it assumed"


def test_unknown_model_offline_is_one_clear_error(no_network, monkeypatch, capsys):
    code, out, err = invoke(monkeypatch, capsys, "train", "-m", "acme/not-a-model", "--dry-run")
    assert code == 2, (out, err)
    assert "error:" in err and "Traceback" not in err
    assert "bigcode/starcoderbase-1b" in err  # it names the models whose configs are bundled


def test_train_without_dataset_still_needs_one_unless_dry_run(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke(monkeypatch, capsys, "train", "-m", "tiny-gpt-bigcode")
    assert code == 2 and "--dataset is required" in err, (out, err)
    assert not any(tmp_path.iterdir())


def test_bundled_configs_name_their_sources_and_ship_with_the_package():
    from codetune.train.dryrun import bundled_config, bundled_models

    names = bundled_models()
    for recipe in EXAMPLES.glob("*.yaml"):
        from codetune.config import load_recipe

        assert load_recipe(recipe).train.model in names, recipe.name
    for name in names:
        data = bundled_config(name)
        assert data["_name_or_path"] == name and data["model_type"]
        source = data["_source"]
        assert source["url"].startswith("https://huggingface.co/" + name), name
        assert source["values"], name
    pyproject = (EXAMPLES.parent / "pyproject.toml").read_text()
    assert "modeling/configs/*.json" in pyproject


def test_a_bundled_config_says_how_to_get_the_weights_not_that_it_is_unreadable(
    no_network, monkeypatch, capsys
):
    code, out, err = invoke(monkeypatch, capsys, "train", "-m", "bigcode/starcoderbase-1b", "--dry-run")
    assert code == 0, err
    config = next(line for line in out.splitlines() if line.startswith("config:"))
    assert "not readable here" not in config
    assert "https://huggingface.co/bigcode/starcoderbase-1b/blob/main/config.json" in config
    assert "hf download bigcode/starcoderbase-1b" in config and "hf auth login" in config  # gated
    code, out, err = invoke(monkeypatch, capsys, "train", "-m", "bigcode/starcoder2-3b", "--dry-run")
    config = next(line for line in out.splitlines() if line.startswith("config:"))
    assert "hf download bigcode/starcoder2-3b" in config and "hf auth login" not in config  # not gated


def test_the_plan_says_whether_activations_assume_checkpointing_and_warns_past_a_16_gb_gpu(
    no_network, monkeypatch, capsys
):
    args = ("train", "-m", "bigcode/starcoder2-3b", "--method", "qlora", "--dry-run")
    code, out, err = invoke(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "activations: without gradient checkpointing" in out
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert "more than a 16 GB GPU" in warning and "gradient_checkpointing=true" in warning
    code, out, err = invoke(monkeypatch, capsys, *args, "--set", "gradient_checkpointing=true")
    assert "activations: with gradient checkpointing" in out
    assert not [line for line in out.splitlines() if line.startswith("warning:")]  # 15 GiB -> about 4
    assert "qlora fits a GPU of 8 GB" in out
