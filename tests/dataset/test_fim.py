"""Fill-in-the-Middle: every layout and split mode round-trips exactly; rates match; sentinels added."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from tests.helpers.dataset import (
    ELM_FILE,
    KOTLIN_FILE,
    PYTHON_FILE,
    all_rows,
    corpus_rows,
    make_tokenizer,
    run_build,
    write_corpus,
)

from codetune.dataset.fim import LAYOUTS, SPLITS, cut, token_starts
from codetune.dataset.syntax import middle_nodes
from codetune.fim import FimFormat
from codetune.modeling.loading import load_tokenizer

SAMPLES = [
    ("python", PYTHON_FILE),
    ("elm", ELM_FILE),
    ("kotlin", KOTLIN_FILE),
    ("python", "é = 'ünï' + \"çödé\"  # ✓\n"),
]


def one_node(text: str, span: tuple[int, int], nodes: list[tuple[int, int]]) -> bool:
    """The middle is one whole node, plus at most whitespace on either side."""
    a, b = span
    return any(a <= lo and hi <= b and not text[a:lo].strip() and not text[hi:b].strip() for lo, hi in nodes)


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
                assert one_node(text, span, middle_nodes(text, language))
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
            start = len(back.prefix)
            assert one_node(
                row["text"], (start, start + len(back.middle)), middle_nodes(row["text"], language)
            )


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
    # every file is over 64 tokens: its FIM row holds the part that fits, and says it was trimmed
    assert stats["trimmed"] == sum(len(dataset[s]) for s in dataset) > 0


@pytest.mark.parametrize(("spm_rate", "mode"), [(0.0, "random"), (1.0, "random"), (0.0, "syntax")])
def test_fim_of_full_blocks_loses_no_token(spm_rate: float, mode: str, tmp_path: Path, tokenizer) -> None:
    # Long files cut into blocks of max_length: every FIM row decodes back to its whole block,
    # and the blocks of a file joined give the file.
    rows = corpus_rows(repos=1, files_per_repo=6)
    corpus = write_corpus(tmp_path / "corpus", rows)
    _, dataset, stats = run_build(
        corpus,
        tmp_path / "ds",
        fim_rate=1.0,
        fim_spm_rate=spm_rate,
        fim_split=mode,
        max_length=64,
        valid_fraction=0.0,
        test_fraction=0.0,
        decontam={"minhash": False},
    )
    fmt = FimFormat.from_tokenizer(tokenizer)
    train = dataset["train"]
    assert stats["trimmed"] == 0 and stats["fim"]["realised_rate"] == 1.0
    full = 0
    by_path: dict[str, list[str]] = {}
    for row in train:
        assert len(row["input_ids"]) <= 64
        back = fmt.split(row["input_ids"], lambda t: tokenizer.decode(t, clean_up_tokenization_spaces=False))
        assert back is not None and back.text == row["text"], (row["path"], row["text"][-40:])
        full += len(row["input_ids"]) >= 60
        by_path.setdefault(row["path"], []).append(row["text"])
    assert full >= 10  # blocks that filled the room: the ones that used to lose their last tokens
    originals = {row["path"]: row["content"] for row in rows}
    assert {path: "".join(pieces) for path, pieces in by_path.items()} == originals


def middles_of_a_syntax_build(tmp_path: Path, tokenizer, name: str, **options) -> list[int]:
    rows = corpus_rows(repos=1, files_per_repo=60)
    corpus = write_corpus(tmp_path / f"corpus-{name}", rows)
    _, dataset, stats = run_build(
        corpus,
        tmp_path / name,
        fim_rate=1.0,
        fim_spm_rate=0.0,
        fim_split="syntax",
        max_length=4096,
        valid_fraction=0.0,
        test_fraction=0.0,
        decontam={"minhash": False},
        **options,
    )
    assert stats["fim"]["syntax_fallback_random"] == 0
    fmt = FimFormat.from_tokenizer(tokenizer)
    middles = []
    for row in dataset["train"]:
        back = fmt.split(row["input_ids"], lambda t: tokenizer.decode(t, clean_up_tokenization_spaces=False))
        assert back is not None and back.text == row["text"]
        middles.append(back.middle)
    return middles


def test_syntax_middles_are_statements_blocks_and_expressions(tmp_path: Path, tokenizer) -> None:
    import statistics

    middles = middles_of_a_syntax_build(tmp_path, tokenizer, "default")
    sizes = [len(tokenizer(m, add_special_tokens=False)["input_ids"]) for m in middles]
    assert len(sizes) == 60
    assert min(sizes) >= 3 and max(sizes) <= 256, sorted(sizes)  # the default bounds
    assert statistics.median(sizes) >= 6, sorted(sizes)
    # both whole blocks (several lines) and expressions or statements within a line
    multi_line = sum("\n" in m.strip() for m in middles)
    assert multi_line >= 6 and len(middles) - multi_line >= 6, middles
    # never a bare name: a middle has at least one non-identifier character
    assert not [m for m in middles if re.fullmatch(r"[\w.]+", m.strip())], middles

    bounded = middles_of_a_syntax_build(
        tmp_path, tokenizer, "bounded", fim_syntax={"min_tokens": 8, "max_tokens": 30}
    )
    sizes = [len(tokenizer(m, add_special_tokens=False)["input_ids"]) for m in bounded]
    # the bounds count tokens of the whole text; a middle cut inside a token may tokenize one longer
    assert all(8 <= size <= 31 for size in sizes), sorted(sizes)
