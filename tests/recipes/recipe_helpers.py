"""Helpers for the recipe tests: run an example recipe in process with tiny overrides, check outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def on_cpu(recipe: str) -> list[str]:
    """The only changes a recipe needs here (a CPU, no hub): each real model becomes the preset of its
    family (read from the model's real config), and a 4-bit method (CUDA only) its 16-bit twin, LoRA.
    Every other setting is the recipe's own; tests keep runtime down with small inputs."""
    from codetune.config import load_recipe
    from codetune.train.dryrun import bundled_config
    from codetune.train.methods import get_method

    written = load_recipe(EXAMPLES / recipe)
    overrides = []
    for stage in ("build", "train"):
        section = getattr(written, stage)
        if section is not None:
            family = bundled_config(section.model)["model_type"]
            overrides.append(f"{stage}.model={FAMILY_PRESETS[family]}")
    if written.train is not None and get_method(written.train.method).quantized:
        overrides.append("train.method=lora")
    return overrides


# Still used by the Elm and CoNaLa tests: their recipes fix max_steps (3000 and 1000), which small
# inputs cannot shorten, so these two override the run's length and eval sizes as before.
TINY_TRAIN = [
    "train.max_steps=3",
    "train.batch_tokens=256",
    "train.batch_size=4",
    "train.eval_every=3",
    "train.save_every=3",
    "train.eval_max_batches=2",
    "train.precision=fp32",
]
TINY_EVAL = [
    "eval.samples=3",
    "eval.max_new_tokens=6",
    "eval.max_prompt_tokens=96",
    "eval.loss_examples=4",
    "eval.batch_size=4",
    "eval.device=cpu",
    "eval.side_by_side=1",
]


def run(recipe: str, workdir: Path, *overrides: str, stages: list[str] | None = None) -> dict[str, Any]:
    """`codetune run examples/RECIPE --set workdir=... --set ...` in process; results by stage name."""
    from codetune.runner import run_recipe

    results = run_recipe(EXAMPLES / recipe, [f"workdir={workdir}", *overrides], stages=stages)
    return {result.stage: result for result in results}


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
