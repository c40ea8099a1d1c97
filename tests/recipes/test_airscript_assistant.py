"""examples/airscript-assistant.yaml: scripts -> files + FIM (PSM/SPM) -> AdaLoRA -> completion and FIM eval."""

from __future__ import annotations

from tests.helpers.recipe_files import doccano_export, javascript_file
from tests.helpers.recipes import (
    EXAMPLES,
    check_report,
    check_run_folder,
    check_settings,
    on_cpu,
    read_json,
    run,
)


def test_airscript_recipe_end_to_end(tmp_path, settings):
    scripts = tmp_path / "airscript" / "scripts"
    scripts.mkdir(parents=True)
    for i in range(12):
        (scripts / f"macro{i}.js").write_text(javascript_file(i), encoding="utf-8")
    (scripts / "notes.txt").write_text("not a script\n" * 5)
    export = doccano_export(tmp_path / "doccano-export.jsonl", count=10)
    work = tmp_path / "work"
    results = run(
        "airscript-assistant.yaml",
        work,
        f"collect.sources=[{scripts}]",
        f"build.mix=[{{format: instruct, corpus: {export}}}]",
        *on_cpu("airscript-assistant.yaml", settings),  # tiny-gpt-bigcode (MQA), its own 3 epochs
    )
    assert list(results) == ["collect", "build", "train", "eval"]
    check_settings(results, work, "airscript-assistant.yaml", settings)
    corpus = read_json(work / "corpus" / "manifest.json")
    assert corpus["totals"]["files_kept"] == 12 and corpus["language"] == "javascript", corpus["totals"]

    stats = read_json(work / "dataset" / "stats.json")
    fim = stats["fim"]
    assert fim["rate"] == 0.5 and fim["spm_rate"] == 0.5, fim
    assert fim["examples"] > 0 and fim["psm"] + fim["spm"] == fim["examples"], fim
    (mixed,) = stats["mix"]
    assert mixed["format"] == "instruct" and sum(mixed["examples"].values()) == 10, mixed
    from datasets import load_from_disk

    train = load_from_disk(str(work / "dataset"))["train"]
    masked = [row for row in train if 0 in row["loss_mask"]]  # instruction pairs: no loss on the prompt
    assert len(masked) == mixed["examples"]["train"] and all(1 in row["loss_mask"] for row in masked)

    manifest = check_run_folder(work / "run", method="adalora")
    table = manifest["parameters"]
    assert 0 < table["trainable_params"] < table["total_params"] and table["trainable_pct"] > 0, table
    assert (work / "run" / "adalora_ranks.json").is_file()

    report = check_report(work / "report", {"base", "tuned"}, {"edit_sim", "bleu", "fim_exact_match"})
    assert set(report["tasks"]) >= {"completion", "fim"}, report["tasks"].keys()
    for name in ("base", "tuned"):
        assert {"edit_sim", "bleu"} <= set(report["tasks"]["completion"]["models"][name])
        assert "fim_exact_match" in report["tasks"]["fim"]["models"][name]


def test_airscript_doccano_export_builds_instruction_pairs(tmp_path):
    export = doccano_export(tmp_path / "doccano-export.jsonl", count=10)
    work = tmp_path / "work"
    run(
        "airscript-assistant.yaml",
        work,
        f"build.corpus={export}",
        "build.format=instruct",
        "build.mix=[]",
        *on_cpu("airscript-assistant.yaml"),
        stages=["build"],
    )
    stats = read_json(work / "dataset" / "stats.json")
    assert stats["format"] == "instruct" and sum(s["examples"] for s in stats["splits"].values()) == 10, stats
    from datasets import load_from_disk

    row = load_from_disk(str(work / "dataset"))["train"][0]
    assert "highlight rows" in row["prompt"] and row["completion"].lstrip().startswith("function")
    assert "highlight rows" not in row["completion"]


def test_airscript_recipe_as_written():
    from codetune.config import load_recipe

    recipe = load_recipe(EXAMPLES / "airscript-assistant.yaml")
    assert recipe.train.model == "bigcode/starcoderbase-1b" and recipe.train.method == "adalora"
    assert recipe.build.fim_rate == 0.5 and recipe.build.fim_spm_rate == 0.5
    assert [m.format for m in recipe.build.mix] == ["instruct"]
