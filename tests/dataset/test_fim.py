"""Fill-in-the-Middle: every layout and split mode round-trips exactly; rates match; sentinels added."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from codetune.dataset.fim import LAYOUTS, SPLITS, cut, token_starts
from codetune.dataset.syntax import middle_nodes
from codetune.fim import FimFormat
from codetune.modeling.loading import load_tokenizer

from .conftest import ELM_FILE, KOTLIN_FILE, PYTHON_FILE, make_tokenizer
from .helpers import all_rows, run_build

SAMPLES = [
    ("python", PYTHON_FILE),
    ("elm", ELM_FILE),
    ("kotlin", KOTLIN_FILE),
    ("python", "é = 'ünï' + \"çödé\"  # ✓\n"),
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-gpt-bigcode")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("mode", sorted(SPLITS))
def test_pieces_back_in_order_give_the_original(layout: str, mode: str, tokenizer) -> None:
    fmt = FimFormat.from_tokenizer(tokenizer)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens, clean_up_tokenization_spaces=False)

    rng = random.Random(0)
    for language, text in SAMPLES:
        offsets = token_starts(
            tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        )
        for _ in range(25):
            span = SPLITS[mode](text, rng, {"offsets": offsets, "language": language})
            assert span is not None
            pieces = cut(text, *span)
            assert pieces.text == text
            if mode == "syntax":
                assert span in middle_nodes(text, language)  # the middle is one whole node
            else:
                assert span[0] in [*offsets, len(text)] and span[1] in [*offsets, len(text)]
            tokens = fmt.example_ids(
                encode(pieces.prefix), encode(pieces.middle), encode(pieces.suffix), spm=layout == "spm"
            )
            assert tokens[0] == fmt.prefix_id
            if layout == "spm":
                assert tokens[1] == fmt.suffix_id
            back = fmt.split(tokens, decode)
            assert back is not None and back.text == text
            if layout == "psm":
                assert (back.prefix, back.middle, back.suffix) == (
                    pieces.prefix,
                    pieces.middle,
                    pieces.suffix,
                )
            else:
                assert back.suffix == pieces.suffix and back.middle == pieces.prefix + pieces.middle


@pytest.mark.parametrize(
    ("spm_rate", "mode"), [(0.0, "random"), (1.0, "random"), (0.0, "syntax"), (1.0, "syntax")]
)
def test_built_fim_rows_round_trip(
    spm_rate: float, mode: str, corpus: Path, tmp_path: Path, tokenizer
) -> None:
    _, dataset, stats = run_build(
        corpus,
        tmp_path / "ds",
        format="files",
        fim_rate=1.0,
        fim_spm_rate=spm_rate,
        fim_split=mode,
        max_length=4096,
        decontam={"minhash": False},
    )
    fmt = FimFormat.from_tokenizer(tokenizer)
    rows = [row for _, row in all_rows(dataset)]
    assert stats["fim"]["realised_rate"] == 1.0 and stats["fim"]["realised_spm_rate"] == spm_rate
    assert stats["fim"]["syntax_fallback_random"] == 0
    for row in rows:
        assert row["input_ids"][-1] == tokenizer.eos_token_id
        back = fmt.split(row["input_ids"], lambda t: tokenizer.decode(t, clean_up_tokenization_spaces=False))
        assert back is not None and back.text == row["text"]
        assert (row["input_ids"][1] == fmt.suffix_id) == (spm_rate == 1.0 or back.prefix == "")
        if mode == "syntax" and spm_rate == 0.0:
            language = {"py": "python", "elm": "elm", "kt": "kotlin"}[row["path"].rsplit(".", 1)[1]]
            spans = middle_nodes(row["text"], language)
            start = len(back.prefix)
            assert (start, start + len(back.middle)) in spans


@pytest.mark.parametrize(("rate", "spm"), [(0.5, 0.5), (0.2, 0.8)])
def test_realised_rates_on_2000_examples(rate: float, spm: float, tmp_path: Path, tokenizer) -> None:
    lines = [json.dumps({"code": f"def f{i}(x):\n    return x * {i} + {i % 7}\n"}) for i in range(2000)]
    (tmp_path / "code.jsonl").write_text("\n".join(lines))
    _, dataset, stats = run_build(
        tmp_path / "code.jsonl",
        tmp_path / "ds",
        format="code_json",
        fim_rate=rate,
        fim_spm_rate=spm,
        valid_fraction=0.0,
        test_fraction=0.0,
        decontam={"minhash": False},
    )
    fmt = FimFormat.from_tokenizer(tokenizer)
    rows = dataset["train"]["input_ids"]
    assert len(rows) == 2000
    fim = [r for r in rows if r[0] == fmt.prefix_id]
    spm_rows = [r for r in fim if r[1] == fmt.suffix_id]
    assert abs(len(fim) / 2000 - rate) <= 0.05
    assert stats["fim"]["psm"] + stats["fim"]["spm"] == len(fim)
    # SPM rows start <prefix><suffix>; so does a PSM row with an empty prefix, hence ">=".
    assert len(spm_rows) >= stats["fim"]["spm"]
    assert abs(stats["fim"]["realised_spm_rate"] - spm) <= 0.05
    # deterministic for a seed
    _, again, _ = run_build(
        tmp_path / "code.jsonl",
        tmp_path / "ds2",
        format="code_json",
        fim_rate=rate,
        fim_spm_rate=spm,
        valid_fraction=0.0,
        test_fraction=0.0,
        decontam={"minhash": False},
    )
    assert again["train"]["input_ids"] == rows


def test_sentinels_are_added_to_a_tokenizer_without_them(corpus: Path, tmp_path: Path) -> None:
    folder = make_tokenizer(tmp_path / "tok")
    from transformers import AutoTokenizer

    assert FimFormat.from_tokenizer(AutoTokenizer.from_pretrained(folder)) is None
    out = tmp_path / "ds"
    _, dataset, stats = run_build(
        corpus, out, model=str(folder), fim_rate=1.0, max_length=8192, decontam={"minhash": False}
    )
    saved = AutoTokenizer.from_pretrained(out / "tokenizer")
    family = FimFormat.from_tokenizer(saved).family
    assert family is not None and stats["fim"]["added"] >= 3 and stats["fim"]["family"] == family.name
    fmt = FimFormat.from_tokenizer(saved)
    for _, row in all_rows(dataset):
        back = fmt.split(row["input_ids"], lambda t: saved.decode(t, clean_up_tokenization_spaces=False))
        assert back is not None and back.text == row["text"]


def test_prompt_completion_rows_stay_left_to_right(corpus: Path, tmp_path: Path, tokenizer) -> None:
    _, dataset, stats = run_build(
        corpus, tmp_path / "ds", format="windows", fim_rate=1.0, decontam={"minhash": False}
    )
    fmt = FimFormat.from_tokenizer(tokenizer)
    assert all(row["input_ids"][0] != fmt.prefix_id for _, row in all_rows(dataset))
    assert stats["fim"]["examples"] == 0


def test_fim_on_an_overlong_file_uses_the_part_that_fits(corpus: Path, tmp_path: Path, tokenizer) -> None:
    _, dataset, stats = run_build(
        corpus,
        tmp_path / "ds",
        fim_rate=1.0,
        fim_spm_rate=0.0,
        max_length=64,
        overlong="trim",
        decontam={"minhash": False},
    )
    fmt = FimFormat.from_tokenizer(tokenizer)
    for _, row in all_rows(dataset):
        assert len(row["input_ids"]) <= 64
        back = fmt.split(row["input_ids"], lambda t: tokenizer.decode(t, clean_up_tokenization_spaces=False))
        assert back is not None and row["text"].startswith(back.text) and len(back.text) > 50
    assert stats["trimmed"] == 0
