"""`prompt_template` builds a prompt from several fields (CoNaLa: intent + snippet)."""

from __future__ import annotations

import json

import pytest

from codetune.errors import InputError
from codetune.generation.api import generate
from codetune.generation.batch import generate_file, prompt_of
from codetune.generation.config import GenerateConfig
from codetune.generation.params import SamplingParams
from codetune.modeling.loading import load_model, load_tokenizer


def test_template_fills_fields_and_the_model_sees_it(tmp_path):
    rows = [{"qid": i, "intent": f"sort list {i}", "snippet": f"sorted(xs{i})"} for i in range(3)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = GenerateConfig(
        model="tiny-gpt-bigcode",
        input=tmp_path / "in.jsonl",
        out=tmp_path / "out.jsonl",
        prompt_template="{intent}\n{snippet}",
        id_field="qid",
        max_new_tokens=3,
    )
    assert prompt_of(rows[1], cfg) == "sort list 1\nsorted(xs1)"
    generate_file(cfg)
    out = {r["qid"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    model, tokenizer = load_model("tiny-gpt-bigcode"), load_tokenizer("tiny-gpt-bigcode")
    expected = generate(model, tokenizer, [prompt_of(r, cfg) for r in rows], SamplingParams(max_new_tokens=3))
    assert [out[i]["completion"] for i in range(3)] == expected
    assert out[0]["intent"] == "sort list 0"


def test_template_naming_a_missing_field_is_a_clear_error(tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"intent": "x"}) + "\n")
    cfg = GenerateConfig(
        model="tiny-gpt-bigcode",
        input=tmp_path / "in.jsonl",
        out=tmp_path / "out.jsonl",
        prompt_template="{intent}\n{snippet}",
    )
    with pytest.raises(InputError, match="no field 'snippet' for prompt_template"):
        generate_file(cfg)
    assert not (tmp_path / "out.jsonl").exists()
