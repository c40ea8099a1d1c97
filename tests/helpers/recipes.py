"""Helpers for the recipe tests: run an example recipe in process with tiny overrides, check outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# A small recipe, for tests of recipe loading.
RECIPE = """\
# codetune run recipe.yaml
name: demo
workdir: out/demo
collect:
  sources: [src]
  language: python
build:
  format: files
  model: tiny-gpt-bigcode
  max_length: 256
train:
  model: tiny-gpt-bigcode
  method: lora
  lr: 0.001
"""

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# The tiny preset of each real model family: it keeps the family's code paths (codetune.modeling.presets).
FAMILY_PRESETS = {
    "gpt_bigcode": "tiny-gpt-bigcode",
    "starcoder2": "tiny-starcoder2",
    "phi": "tiny-phi",
    "codegen": "tiny-codegen",
    "t5": "tiny-t5",
    "llama": "tiny-llama",
}


# How much a CPU test may shrink: how long a recipe runs and how much data it reads, never how it runs.
# The recipes are sized for a GPU and a real corpus (Elm: 3000 steps; 200 or 500 eval samples). Each
# recipe test runs two ways:
# - "cpu" (the default suite, about 40 s of a shared 2-core machine per recipe): a recipe that trains
#   for max_steps stops after CPU_STEPS optimizer steps (one that trains by epochs runs them all: a few
#   steps on the fixtures), and eval reads at most CPU_SAMPLES completion samples and loss rows and
#   writes at most CPU_NEW_TOKENS tokens per completion;
# - "own" (`-m slow`, which .ci/run runs after the default suite): every setting is the recipe's own,
#   its steps and its eval samples included; only the model and a 4-bit method change (on_cpu).
# Schedules (warmup, cosine, AdaLoRA's tinit/tfinal) are fractions of the run and shrink with it.
CPU_STEPS = 2
CPU_SAMPLES = 4
CPU_NEW_TOKENS = 16
SETTINGS = ("cpu", "own")


def on_cpu(recipe: str, settings: str = "cpu") -> list[str]:
    """The only changes a recipe gets here (a CPU, no hub): each real model becomes the tiny preset of
    its family (read from the model's real config: GPTBigCode MQA, StarCoder2's sliding window, Phi's
    partial rotary, CodeGen, T5), a 4-bit method (CUDA only) its 16-bit twin LoRA, and with the "cpu"
    settings a max_steps run's length and eval's sample counts are capped. Every other setting is the
    recipe's own."""
    from codetune.config import load_recipe
    from codetune.train.dryrun import bundled_config
    from codetune.train.methods import get_method

    if settings not in SETTINGS:
        raise ValueError(f"settings must be one of {SETTINGS}, not {settings!r}")
    written = load_recipe(EXAMPLES / recipe)
    overrides = []
    for stage in ("build", "train"):
        section = getattr(written, stage)
        if section is not None:
            family = bundled_config(section.model)["model_type"]
            overrides.append(f"{stage}.model={FAMILY_PRESETS[family]}")
    if written.train is not None and get_method(written.train.method).quantized:
        overrides.append("train.method=lora")
    if settings == "own":
        return overrides
    if written.train is not None and written.train.max_steps:  # an epochs recipe runs its own epochs
        overrides.append(f"train.max_steps={min(written.train.max_steps, CPU_STEPS)}")
    if written.eval is not None:
        overrides.append(f"eval.samples={min(written.eval.samples, CPU_SAMPLES)}")
        overrides.append(f"eval.loss_examples={min(written.eval.loss_examples, CPU_SAMPLES)}")
        overrides.append(f"eval.max_new_tokens={min(written.eval.max_new_tokens, CPU_NEW_TOKENS)}")
    return overrides


def run(recipe: str, workdir: Path, *overrides: str, stages: list[str] | None = None) -> dict[str, Any]:
    """`codetune run examples/RECIPE --set workdir=... --set ...` in process; results by stage name."""
    from codetune.runner import run_recipe

    results = run_recipe(EXAMPLES / recipe, [f"workdir={workdir}", *overrides], stages=stages)
    return {result.stage: result for result in results}


def check_settings(results: dict[str, Any], work: Path, recipe: str, settings: str) -> None:
    """What ran is what the settings say: the recipe's own optimizer steps and eval samples ("own"),
    or the CPU caps ("cpu"), counted in the run summary and in eval's predictions.jsonl."""
    from codetune.config import load_recipe

    written = load_recipe(EXAMPLES / recipe)
    own = settings == "own"
    if written.train is not None and written.train.max_steps:
        steps = written.train.max_steps if own else min(written.train.max_steps, CPU_STEPS)
        assert results["train"].summary["steps"] == steps, results["train"].summary
    if written.eval is not None:
        samples = written.eval.samples if own else min(written.eval.samples, CPU_SAMPLES)
        report = read_json(work / "report" / "report.json")
        assert report["settings"]["samples"] == samples, report["settings"]
        lines = (work / "report" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        completions = [row for row in map(json.loads, lines) if row["task"] == "completion"]
        per_model = {name: sum(row["model"] == name for row in completions) for name in report["models"]}
        if "completion" in report["tasks"]:  # cut from the held-out files: at most `samples` of them
            assert all(0 < count <= samples for count in per_model.values()), (per_model, samples)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def check_run_folder(run_dir: Path, method: str = "lora") -> dict[str, Any]:
    """A run folder from `codetune train`: adapter (or model), metrics rows, manifest."""
    assert (run_dir / ("model" if method == "full" else "adapter")).is_dir(), sorted(run_dir.iterdir())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert rows and any("loss" in row for row in rows), rows
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["method"] == method
    return manifest


def check_report(report: Path, models: set[str], metrics: set[str]) -> dict[str, Any]:
    """report.json holds one column per model with the recipe's metrics."""
    data = read_json(report / "report.json")
    assert set(data["models"]) == models, data["models"].keys()
    for name in models:
        found = set(data["models"][name])
        assert any(m in key for m in metrics for key in found) or metrics <= found, (name, found)
    assert (report / "report.md").is_file()
    return data
