"""examples/kotlin-completion.yaml: git repo -> cleaned corpus -> windows -> LoRA -> merge -> base vs tuned."""

from __future__ import annotations

import json

from tests.helpers.recipe_files import codexglue_method, kotlin_repo
from tests.helpers.recipes import (
    EXAMPLES,
    check_report,
    check_run_folder,
    check_settings,
    on_cpu,
    read_json,
    run,
)


def test_kotlin_recipe_end_to_end(tmp_path, settings):
    repo = kotlin_repo(tmp_path / "kotlin-repo", count=6)  # 6 files: one optimizer step of 8192 tokens
    benchmark = codexglue_method(tmp_path / "codexglue-method-test.jsonl", count=2)
    work = tmp_path / "work"
    results = run(
        "kotlin-completion.yaml",
        work,
        f"collect.sources=[file://{repo}]",
        f"collect.cache_dir={tmp_path / 'cache'}",
        f"eval.benchmark={benchmark}",
        *on_cpu("kotlin-completion.yaml", settings),  # tiny-phi, LoRA for QLoRA, its own epoch
    )
    assert list(results) == ["collect", "build", "train", "merge", "eval"]
    check_settings(results, work, "kotlin-completion.yaml", settings)

    corpus = read_json(work / "corpus" / "manifest.json")
    assert corpus["totals"]["files_kept"] == 6 and corpus["licence_stripped"] == 1, corpus
    dropped = corpus["counts"]["dropped"]
    assert dropped["long_literal"]["files"] == 1 and dropped["too_few_lines"]["files"] == 1, dropped
    from codetune.artifacts import read_corpus

    rows = read_corpus(work / "corpus")
    assert {r["path"].rsplit(".", 1)[1] for r in rows} == {"kt"}  # include: *.kt, no build.gradle.kts
    first = next(r for r in rows if r["path"].endswith("File0.kt"))
    assert "Copyright" not in first["content"] and first["content"].startswith("package")

    stats = read_json(work / "dataset" / "stats.json")
    assert stats["format"] == "windows" and stats["kind"] == "causal"
    assert all(stats["splits"][s]["examples"] > 0 for s in ("train", "valid", "test")), stats

    check_run_folder(work / "run")
    merged = results["merge"].summary  # the merge compared logits on valid rows and passed its check
    assert merged["samples"] > 0 and 0 <= merged["max_logit_diff"] <= 1e-3, merged
    config = read_json(work / "merged" / "config.json")
    assert config["model_type"] == "phi" and config["rope_parameters"]["partial_rotary_factor"] == 0.5
    report = check_report(work / "report", {"base", "tuned"}, {"edit_sim", "bleu"})
    assert set(report["tasks"]) >= {"completion", "benchmark"}, report["tasks"].keys()
    for name in ("base", "tuned"):  # the base-vs-tuned table: CodeXGLUE ES and BLEU on both tasks
        for task in ("completion", "benchmark"):
            scores = report["tasks"][task]["models"][name]
            assert all(0.0 <= scores[m] <= 100.0 for m in ("edit_sim", "bleu")), (task, name, scores)
        assert report["models"][name]["loss"] > 0, report["models"][name]
    print(json.dumps(report, indent=1)[:3000])


def test_kotlin_recipe_as_written_uses_qlora_and_a_dequantizing_merge():
    from codetune.config import load_recipe

    recipe = load_recipe(EXAMPLES / "kotlin-completion.yaml")
    assert recipe.train.model == recipe.build.model == "microsoft/phi-1_5"
    assert recipe.train.method == "qlora" and recipe.merge.dequantize
    assert recipe.build.format == "windows" and recipe.collect.strip_licence
