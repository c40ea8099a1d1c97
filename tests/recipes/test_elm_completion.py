"""examples/elm-completion.yaml: fake GitHub search -> parser-checked Elm -> syntax units -> LoRA(q,v) -> prompts."""

from __future__ import annotations

import json

from tests.helpers.recipe_files import FakeGitHub, elm_file, fake_github, make_git_repo
from tests.helpers.recipes import EXAMPLES, check_run_folder, check_settings, on_cpu, read_json, run


def test_elm_recipe_end_to_end(tmp_path, monkeypatch, settings):
    repos = []
    for r in range(2):
        files = {f"src/Page{r}{i}.elm": elm_file(r * 10 + i) for i in range(5)}
        files["src/Mail.elm"] = "Received: from mx.example.org\n" + "0.5 1.5 2.5 3.5\n" * 6  # not Elm at all
        files["elm-stuff/Cached.elm"] = elm_file(90 + r)  # a skipped folder
        repos.append(make_git_repo(tmp_path / "remote" / f"elm-app-{r}", files))
    server, api = fake_github(repos)
    monkeypatch.delenv("GITHUB_API_URL", raising=False)
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    # With the CPU caps, two of the recipe's seven prompts: n=3 generations of up to 96 tokens each, as
    # the recipe says, are the slowest part of this test. With its own settings, all seven.
    written = json.loads((EXAMPLES / "elm-prompts.json").read_text())
    chosen = written if settings == "own" else written[2:4]
    prompts = tmp_path / "elm-prompts.json"
    prompts.write_text(json.dumps(chosen))
    work = tmp_path / "work"
    try:
        results = run(
            "elm-completion.yaml",
            work,
            f"collect.github_api={api}",
            f"collect.cache_dir={tmp_path / 'cache'}",
            f"eval.prompts={prompts}",
            *on_cpu("elm-completion.yaml", settings),  # tiny-starcoder2 (sliding window), LoRA for QLoRA
        )
    finally:
        server.shutdown()
    assert list(results) == ["collect", "build", "train", "merge", "eval"]
    check_settings(results, work, "elm-completion.yaml", settings)
    assert any("language%3Aelm" in call or "language:elm" in call for call in FakeGitHub.calls), (
        FakeGitHub.calls
    )

    corpus = read_json(work / "corpus" / "manifest.json")
    assert corpus["totals"]["files_kept"] == 10, corpus["counts"]
    assert corpus["counts"]["dropped"]["not_language"]["files"] == 2, corpus["counts"]

    stats = read_json(work / "dataset" / "stats.json")
    assert stats["format"] == "units"
    from datasets import load_from_disk

    train_rows = load_from_disk(str(work / "dataset"))["train"]
    texts = train_rows["text"]
    assert texts and not any(t.lstrip().startswith(("import ", "module ", "--")) for t in texts), texts[:5]
    assert not any("helpers" in t for t in texts)  # the `-- ... helpers` comments are gone

    manifest = check_run_folder(work / "run")
    assert (work / "run" / "adapter" / "adapter_config.json").is_file()
    adapter = read_json(work / "run" / "adapter" / "adapter_config.json")
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"] and adapter["r"] == 8, adapter
    assert manifest["method"] == "lora"
    merged = results["merge"].summary  # the merge compared logits on valid rows and passed its check
    assert merged["samples"] > 0 and 0 <= merged["max_logit_diff"] <= 1e-3 and merged["method"] == "lora", (
        merged
    )
    assert read_json(work / "merged" / "config.json")["sliding_window"] == 256  # the family's window

    report = read_json(work / "report" / "report.json")
    assert set(report["models"]) == {"base", "tuned"}
    task = report["tasks"]["prompts"]
    assert task["n"] == 3 and task["prompts"] == len(chosen)
    for name in ("base", "tuned"):
        assert task["models"][name]["generations"] == 3 * len(chosen)
        assert 0.0 <= report["models"][name]["prompts_syntax_valid"] <= 1.0
        per_prompt = [r for r in report["rows"] if r["task"] == "prompts" and r["model"] == name]
        assert len(per_prompt) == len(chosen) and all(r["successes"] + r["fails"] == 3 for r in per_prompt), (
            per_prompt
        )
    assert "Per prompt" in (work / "report" / "report.md").read_text()  # the write-up's success table
    print({k: v for k, v in report.items() if k != "rows"})
