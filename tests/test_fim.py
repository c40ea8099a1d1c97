"""codetune.fim: every registered family, on the preset tokenizer that carries it, against its sources."""

from __future__ import annotations

import shutil

import pytest

from codetune.fim import ADDED_FAMILY, FAMILIES, FimFormat
from codetune.modeling.loading import load_tokenizer

# The facts each family entry must match, copied from the sources (see codetune/fim.py):
# (prefix, suffix, middle, end-of-middle token or None for the tokenizer's EOS, BOS first).
REAL = {
    # bigcode/starcoder2 tokenizer; Megatron-LM permute: EOD after the middle.
    "starcoder": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", None, False),
    # bigcode/santacoder tokenizer: dashes.
    "santacoder": ("<fim-prefix>", "<fim-suffix>", "<fim-middle>", None, False),
    # meta-llama/codellama llama/tokenizer.py and generation.py: BOS first, stop at ▁<EOT>.
    "codellama": ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>", True),
    # deepseek-ai/DeepSeek-Coder README: tokenizer(text) adds BOS; base models end with EOS 32014.
    "deepseek-coder": ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<｜end▁of▁sentence｜>", True),
    # QwenLM/Qwen2.5-Coder README: no BOS; <|endoftext|> ends a base-model completion.
    "qwen2.5-coder": ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|endoftext|>", False),
    # Gemma 3 has no FIM tokens: codetune's layout on its reserved <unused0..2> (google/gemma_pytorch
    # PR #44); a middle ends with <eos>; BOS required.
    "gemma": ("<unused0>", "<unused1>", "<unused2>", None, True),
}
PREFIX = "def area(width, height):\n    "
MIDDLE = "result = width * height"
SUFFIX = "\n    return result\n"


def test_every_family_has_its_facts_checked():
    assert set(REAL) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_real_sentinel_spellings(family, tokenizers):
    entry = FAMILIES[family]
    prefix, suffix, middle, eot, bos = REAL[family]
    assert (entry.prefix, entry.suffix, entry.middle, entry.eot, entry.bos) == (
        prefix,
        suffix,
        middle,
        eot,
        bos,
    )
    fmt = FimFormat.from_tokenizer(tokenizers[family])
    assert fmt.family is entry
    tok = tokenizers[family]
    assert tok.convert_ids_to_tokens([fmt.prefix_id, fmt.suffix_id, fmt.middle_id]) == [
        prefix,
        suffix,
        middle,
    ]
    assert tok.convert_ids_to_tokens(fmt.end_id) == (eot or tok.eos_token)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_example_starts_with_the_prompt_and_ends_with_the_end_token(family, tokenizers):
    tok = tokenizers[family]
    fmt = FimFormat.from_tokenizer(tok)
    prompt = fmt.prompt(PREFIX, SUFFIX)
    example = fmt.example(PREFIX, MIDDLE, SUFFIX)
    assert example[: len(prompt)] == prompt
    assert example[-1] == tok.convert_tokens_to_ids(REAL[family][3] or tok.eos_token)
    assert (prompt[0] == tok.bos_token_id) == REAL[family][4]
    assert prompt[len(fmt.bos_ids)] == fmt.prefix_id and prompt[-1] == fmt.middle_id
    # What a served completion decodes to is the middle, exactly.
    assert fmt.decode(example[len(prompt) : -1]) == MIDDLE
    back = fmt.split(example)
    assert (back.prefix, back.middle, back.suffix) == (PREFIX, MIDDLE, SUFFIX)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_spm_round_trip(family, tokenizers):
    fmt = FimFormat.from_tokenizer(tokenizers[family])
    example = fmt.example(PREFIX, MIDDLE, SUFFIX, spm=True)
    assert example[: len(fmt.bos_ids) + 2] == [*fmt.bos_ids, fmt.prefix_id, fmt.suffix_id]
    assert example[-1] == fmt.end_id
    back = fmt.split(example)
    # bigcode's SPM does not mark where the prefix ends: the middle comes back joined to it.
    assert back.suffix == SUFFIX and back.prefix + back.middle == PREFIX + MIDDLE


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_decoded_completion_never_contains_a_sentinel(family, tokenizers):
    tok = tokenizers[family]
    fmt = FimFormat.from_tokenizer(tok)
    spelled = [tok.convert_ids_to_tokens(i) for i in fmt.sentinel_ids]
    # A completion that runs into sentinels (a model leaving the middle) decodes to text only.
    generated = [*fmt.encode_infill("x = 1"), *sorted(fmt.sentinel_ids), *fmt.encode_infill(" + 2")]
    text = fmt.decode(generated)
    assert text == "x = 1 + 2" and not any(s in text for s in spelled)
    assert fmt.end_id in fmt.stop_ids and tok.eos_token_id in fmt.stop_ids


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_user_text_spelling_a_sentinel_stays_text(family, tokenizers):
    fmt = FimFormat.from_tokenizer(tokenizers[family])
    ids = fmt.prompt(FAMILIES[family].middle + "x", FAMILIES[family].prefix)
    assert ids.count(fmt.middle_id) == 1 and ids.count(fmt.prefix_id) == 1


def test_codellama_suffix_has_no_extra_leading_space(tokenizers):
    """Meta's reference: [BOS, ▁<PRE>] + encode(pre) + [▁<SUF>] + encode_infilling(suf) + [▁<MID>]."""
    tok = tokenizers["codellama"]
    fmt = FimFormat.from_tokenizer(tok)
    assert fmt.adds_leading_space  # a SentencePiece-style tokenizer: encode("x") is "▁x"
    ids = fmt.prompt("def f(", "\n    return x")
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[:2] == ["<s>", "▁<PRE>"] and tokens[-1] == "▁<MID>"
    suffix = tokens[tokens.index("▁<SUF>") + 1 : -1]
    prefix = tokens[2 : tokens.index("▁<SUF>")]
    assert prefix[0].startswith("▁")  # encode(pre) keeps SentencePiece's dummy space, as Meta's does
    assert not suffix[0].startswith("▁")  # encode_infilling: none on the suffix
    assert fmt.decode(fmt.encode_infill("\n    return x")) == "\n    return x"
    assert fmt.decode(fmt.encode_infill(" x")) == " x"  # a real leading space survives decoding


def test_family_comes_from_the_tokens_not_the_name(tmp_path):
    """A folder named like StarCoder holding CodeLlama's tokenizer is CodeLlama."""
    from codetune.modeling.presets import preset_dir

    folder = tmp_path / "bigcode-starcoder2-3b"
    shutil.copytree(preset_dir("tiny-codellama"), folder)
    assert FimFormat.from_tokenizer(load_tokenizer(str(folder))).family.name == "codellama"


def test_no_fim_tokens_is_none_and_a_build_adds_codetunes():
    tok = load_tokenizer("tiny-codegen")
    assert FimFormat.from_tokenizer(tok) is None
    fmt, added = FimFormat.ensure(tok)
    assert fmt.family.name == ADDED_FAMILY and added == len(FAMILIES[ADDED_FAMILY].sentinels)
    assert FimFormat.from_tokenizer(tok) is fmt
    assert FimFormat.ensure(tok)[1] == 0


def test_repository_tokens():
    have = {
        name: FimFormat.from_tokenizer(load_tokenizer(preset)).repo_tokens
        for name, preset in [
            ("starcoder", "tiny-starcoder2"),
            ("qwen2.5-coder", "tiny-qwen2.5-coder"),
            ("codellama", "tiny-codellama"),
        ]
    }
    assert (have["starcoder"].repo_name_token, have["starcoder"].file_sep_token) == (
        "<repo_name>",
        "<file_sep>",
    )
    assert have["qwen2.5-coder"].file_sep_token == "<|file_sep|>"
    assert have["codellama"] is None


def test_reserved_tokens_are_fim_only_once_a_build_taught_them(tmp_path):
    """Stock Gemma has <unused0..2> but never saw them as sentinels: prefix-only until a build marks it."""
    from codetune.fim import RESERVED_MARK

    tokenizer = load_tokenizer("tiny-gemma3")
    assert FimFormat.from_tokenizer(tokenizer) is None
    size = len(tokenizer)
    fmt, added = FimFormat.ensure(tokenizer)
    assert (fmt.family.name, added, len(tokenizer)) == ("gemma", 0, size)
    tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(str(tmp_path))
    assert again.init_kwargs[RESERVED_MARK] == "gemma"
    assert FimFormat.from_tokenizer(again).family is fmt.family
    # ids that are not the family's sentinels teach nothing
    other = load_tokenizer("tiny-gemma3")
    assert FimFormat.teach_reserved(other, [7, 6, 8]) is None and FimFormat.from_tokenizer(other) is None
