"""docs/recipe-reference.md is generated from the pydantic models: it must match them exactly."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "recipe-reference.md"


def test_recipe_reference_is_up_to_date():
    from codetune.reference import render_recipe_reference

    expected = render_recipe_reference()
    assert DOC.is_file(), (
        "docs/recipe-reference.md is missing: python -m codetune.reference > docs/recipe-reference.md"
    )
    assert DOC.read_text(encoding="utf-8") == expected, (
        "docs/recipe-reference.md is stale; regenerate it: python -m codetune.reference > docs/recipe-reference.md"
    )


def test_reference_names_every_stage_and_field():
    from codetune.reference import render_recipe_reference
    from codetune.stages import STAGES

    text = render_recipe_reference()
    for stage in STAGES:
        assert f"## `{stage.name}`" in text
        for name in stage.config_class.model_fields:
            assert f"| `{name}` |" in text, (stage.name, name)


def test_every_example_recipe_loads_and_says_how_to_run_it():
    from codetune.config import load_recipe

    examples = sorted((DOC.parents[1] / "examples").glob("*.yaml"))
    assert {p.name for p in examples} >= {
        "airscript-assistant.yaml",
        "kotlin-completion.yaml",
        "elm-completion.yaml",
        "intent-rewriting.yaml",
        "copilot-server.yaml",
    }
    for path in examples:
        assert path.read_text().startswith("#") and f"codetune run examples/{path.name}" in path.read_text()
        load_recipe(path)


def test_docs_links_point_at_existing_files_and_headings():
    import re

    root = DOC.parents[1]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            found = (page.parent / path).resolve()
            assert found.exists(), f"{page.name}: broken link {target}"
            if anchor and found.suffix == ".md":
                headings = {
                    re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                    for line in found.read_text(encoding="utf-8").splitlines()
                    if line.startswith("#")
                }
                assert anchor in headings, f"{page.name}: no heading #{anchor} in {path}"
