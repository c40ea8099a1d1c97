"""GGUF out and back in: every family GGUF carries, exported by llama.cpp's converter and loaded back.

Each preset is first made f16-exact (its weights rounded to float16 and back), so that an f16 GGUF
holds exactly the model and any difference in the greedy text is the export's, not rounding's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.export import READ_BACK

from codetune.export.config import ExportConfig
from codetune.export.runner import export
from codetune.fim import FimFormat
from codetune.modeling.loading import load_model, load_tokenizer

pytest.importorskip("gguf")
pytest.importorskip("conversion")

FAST = {"codellama", "gemma3"}  # the two layouts that differ most (SentencePiece + BOS); the rest: slow
TEXTS = ["def add(a, b):\n    return a + b  # ü 123\n", 'main =\n    text "hi"\n\t\tx  = [1,2]\n']


def _params():
    return [
        pytest.param(family, name, id=family, marks=[] if family in FAST else [pytest.mark.slow])
        for family, name in READ_BACK.items()
    ]


@pytest.mark.parametrize(("family", "name"), _params())
def test_export_then_load_back_gives_the_same_greedy_text(family, name, exported):
    source, gguf_file, summary = exported(family)
    manifest = json.loads(Path(f"{gguf_file}.manifest.json").read_text())
    # 16 greedy prompts, half of them FIM where the family has FIM tokens, through codetune's engine
    assert manifest["parity"] == {"same": 16, "total": 16}, manifest["parity_differing"]
    assert summary["greedy_agreement"] == "16/16"

    # the weights and the tokenizer came back exactly
    import torch

    original, back = load_model(str(source)).state_dict(), load_model(str(gguf_file)).state_dict()
    assert original.keys() == back.keys()
    assert all(torch.equal(original[key], back[key]) for key in original), [
        key for key in original if not torch.equal(original[key], back[key])
    ]
    tokenizer, back_tokenizer = load_tokenizer(str(source)), load_tokenizer(str(gguf_file))
    for text in TEXTS:
        assert back_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    fmt, back_fmt = FimFormat.from_tokenizer(tokenizer), FimFormat.from_tokenizer(back_tokenizer)
    assert (fmt is None) == (back_fmt is None)
    if fmt is not None:
        assert back_fmt.family is fmt.family
        assert back_fmt.prompt(*TEXTS) == fmt.prompt(*TEXTS)


@pytest.mark.parametrize(("family", "name"), _params())
def test_gguf_carries_the_fim_token_ids(family, name, exported):
    from gguf import GGUFReader

    source, gguf_file, _ = exported(family)
    fields = GGUFReader(str(gguf_file)).fields
    ids = {
        key.removeprefix("tokenizer.ggml."): int(f.contents()) for key, f in fields.items() if "fim_" in key
    }
    fmt = FimFormat.from_tokenizer(load_tokenizer(str(source)))
    if fmt is None:
        assert ids == {}
        return
    assert ids["fim_pre_token_id"] == fmt.prefix_id
    assert ids["fim_suf_token_id"] == fmt.suffix_id
    assert ids["fim_mid_token_id"] == fmt.middle_id
    if fmt.family.eot is not None and fmt.end_id != fmt.tokenizer.eos_token_id:
        assert int(fields["tokenizer.ggml.eot_token_id"].contents()) == fmt.end_id


def test_gemma_gguf_is_gemma3_with_its_tokenizer(exported):
    """The Gemma 3 GGUF keeps llama.cpp's SentencePiece vocabulary, no space prefix, BOS added."""
    from gguf import GGUFReader

    _, gguf_file, summary = exported("gemma3")
    fields = GGUFReader(str(gguf_file)).fields
    assert fields["general.architecture"].contents() == "gemma3"
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    assert fields["tokenizer.ggml.add_space_prefix"].contents() is False
    assert fields["tokenizer.ggml.add_bos_token"].contents() is True
    assert summary["fim_family"] == "gemma"


def test_gpt_bigcode_exports_with_its_fim_ids(tmp_path):
    """llama.cpp's `starcoder` architecture; transformers reads none back (test_gguf_in refuses it)."""
    from gguf import GGUFReader

    result = export(ExportConfig(model="tiny-gpt-bigcode", out=tmp_path / "sc.gguf", check_prompts=0))
    fields = GGUFReader(str(result.out)).fields
    assert fields["general.architecture"].contents() == "starcoder"
    assert int(fields["tokenizer.ggml.fim_pre_token_id"].contents()) == load_tokenizer(
        "tiny-gpt-bigcode"
    ).convert_tokens_to_ids("<fim_prefix>")


def test_q8_0_reports_its_agreement(tmp_path):
    result = export(
        ExportConfig(
            model="tiny-gemma3", out=tmp_path / "q.gguf", dtype="q8_0", check_prompts=4, check_tokens=8
        )
    )
    same, total = (int(n) for n in result.summary["greedy_agreement"].split("/"))
    assert total == 4 and 0 <= same <= 4
    assert (
        result.out.stat().st_size
        < 0.6
        * export(ExportConfig(model="tiny-gemma3", out=tmp_path / "f.gguf", check_prompts=0))
        .out.stat()
        .st_size
    )
