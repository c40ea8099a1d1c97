"""examples/intent-rewriting.yaml: CoNaLa pairs -> seq2seq LoRA on a T5 -> merge -> eval -> batch generation."""

from __future__ import annotations

import json

from recipe_fixtures import conala_curated, conala_mined
from recipe_helpers import EXAMPLES, TINY_EVAL, TINY_TRAIN, check_run_folder, read_json, run


def test_intent_rewriting_recipe_end_to_end(tmp_path):
    curated = conala_curated(tmp_path / "data" / "conala-train.json", count=24)
    mined = conala_mined(tmp_path / "data" / "conala-mined.jsonl", count=6)
    work = tmp_path / "work"
    overrides = [
        f"build.corpus={curated}",
        "build.model=tiny-t5",
        "build.max_length=48",
        "build.seq2seq.max_target_length=24",
        "build.valid_fraction=0.2",
        "build.test_fraction=0.2",
        "build.num_proc=1",
        "train.model=tiny-t5",
        f"generate.input={mined}",
        "generate.max_new_tokens=6",
        "generate.device=cpu",
        *TINY_TRAIN,
        *TINY_EVAL,
    ]
    results = run("intent-rewriting.yaml", work, *overrides)
    assert list(results) == ["build", "train", "merge", "eval", "generate"]

    stats = read_json(work / "dataset" / "stats.json")
    assert stats["kind"] == "seq2seq" and stats["format"] == "seq2seq", stats
    assert sum(s["examples"] for s in stats["splits"].values()) == 21, stats  # 3 rows have no rewrite
    from datasets import load_from_disk

    row = load_from_disk(str(work / "dataset"))["train"][0]
    intent, snippet = row["source"].split("\n")
    assert intent.startswith("How to combine") and "=" in snippet and row["target"].startswith("add ")

    check_run_folder(work / "run")
    assert (work / "merged" / "config.json").is_file()
    assert json.loads((work / "merged" / "config.json").read_text())["is_encoder_decoder"]

    report = read_json(work / "report" / "report.json")
    assert set(report["models"]) == {"base", "tuned"}
    assert {"exact_match", "bleu"} <= set(report["tasks"]["completion"]["models"]["tuned"])

    out = [json.loads(line) for line in (work / "generations.jsonl").read_text().splitlines()]
    assert sorted(r["question_id"] for r in out) == list(range(9000, 9006))
    assert all(isinstance(r["rewritten_intent"], str) and r["intent"] and r["snippet"] for r in out), out[:2]

    # Resumable: running the recipe again skips every unchanged stage.
    again = run("intent-rewriting.yaml", work, *overrides)
    assert all(result.skipped for result in again.values()), {k: v.skipped for k, v in again.items()}


def test_intent_rewriting_recipe_as_written():
    from codetune.config import load_recipe

    recipe = load_recipe(EXAMPLES / "intent-rewriting.yaml")
    assert recipe.build.format == "seq2seq" and recipe.build.seq2seq.source_fields == ["intent", "snippet"]
    assert recipe.train.model.startswith("google/flan-t5") and recipe.merge is not None
    assert recipe.generate.output_field == "rewritten_intent"
    assert recipe.generate.prompt_template == "{intent}\n{snippet}"
