"""The Ollama Modelfile: its TEMPLATE, rendered as Ollama renders it, is codetune.fim's FIM prompt."""

from __future__ import annotations

import pytest
from tests.helpers.gotemplate import render

from codetune.export.ollama import modelfile, template
from codetune.fim import FAMILIES, FimFormat
from codetune.modeling.loading import load_tokenizer
from codetune.modeling.presets import PRESETS, TOKENIZERS

PREFIX = "def area(width, height):\n    "
SUFFIX = "\n    return result  # {{ .Suffix }} stays text\n"


def family_presets() -> list[tuple[str, str]]:
    """(family, preset) for every family a preset's tokenizer carries (read from the specs), and one without."""
    rows = {}
    for name, preset in PRESETS.items():
        tokens = set(TOKENIZERS[preset.tokenizer].extra())
        for family in FAMILIES.values():
            if not preset.seq2seq and {family.prefix, family.suffix, family.middle} <= tokens:
                rows.setdefault(family.name, name)
    return [*rows.items(), ("none", "tiny-llama")]


def test_go_evaluator_follows_go_semantics():
    tpl = "{{ if .Suffix }}A{{ .Prompt }}B{{ .Suffix }}C{{ else }}{{ .Prompt }}{{ end }}"
    assert render(tpl, {"Prompt": "p", "Suffix": "s"}) == "ApBsC"
    assert render(tpl, {"Prompt": "p", "Suffix": ""}) == "p"  # the empty string is false in Go
    assert render("x {{- .Prompt -}} y", {"Prompt": "p"}) == "xpy"
    with pytest.raises(ValueError):
        render("{{ .Prompt | upper }}", {"Prompt": "p"})


@pytest.mark.parametrize(("family", "name"), family_presets())
def test_template_renders_codetunes_fim_prompt(family, name, tmp_path):
    tokenizer = load_tokenizer(name)
    fmt = FimFormat.from_tokenizer(tokenizer) or FimFormat.teach_reserved(tokenizer)
    assert (fmt.family.name if fmt else "none") == family
    text = modelfile(tmp_path / "model.gguf", tokenizer, fmt)
    tpl = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert tpl == template(fmt)

    # a plain completion (no suffix) is the prompt alone, in every family
    assert render(tpl, {"Prompt": PREFIX, "Suffix": ""}) == PREFIX
    if fmt is None:
        return
    rendered = render(tpl, {"Prompt": PREFIX, "Suffix": SUFFIX})
    assert rendered == fmt.prompt_text(PREFIX, SUFFIX)
    # and read as Ollama reads it (sentinels recognised, BOS added by the tokenizer) it is exactly the
    # ids codetune serve sends
    assert tokenizer(rendered)["input_ids"] == fmt.prompt(PREFIX, SUFFIX)
    stops = [
        line.split(" ", 2)[2].strip('"') for line in text.splitlines() if line.startswith("PARAMETER stop")
    ]
    assert set(stops) == set(fmt.stop_tokens)
    assert fmt.tokenizer.convert_ids_to_tokens(fmt.end_id) in stops
