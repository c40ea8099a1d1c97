"""One tokenizer per registered FIM family: a preset's where one carries it, else a byte-level one
made with the family's tokens."""

from __future__ import annotations

from typing import Any

from codetune.fim import FAMILIES, FimFormat
from codetune.modeling.loading import load_tokenizer
from codetune.modeling.presets import PRESETS, TokenizerSpec, build_tokenizer

# Families without a tiny preset get a byte-level tokenizer carrying their tokens.
NO_PRESET = {"santacoder"}


def preset_of(family: str) -> str | None:
    for name in PRESETS:
        if name not in {"tiny-t5"}:
            tokenizer = load_tokenizer(name)
            # a reserved-token family (Gemma's) is the tokenizer's once a build teaches it
            fmt = FimFormat.from_tokenizer(tokenizer) or FimFormat.teach_reserved(tokenizer)
            if fmt is not None and fmt.family.name == family:
                return name
    return None


def family_tokenizers(tmp_path_factory: Any) -> dict[str, Any]:
    """Family name -> a tokenizer carrying its tokens."""
    out = {}
    for family in FAMILIES:
        if family in NO_PRESET:
            folder = tmp_path_factory.mktemp(family)
            spec = TokenizerSpec(
                "byte-level", eos="<|endoftext|>", extra=lambda f=family: FAMILIES[f].sentinels
            )
            build_tokenizer(spec, folder)
            out[family] = load_tokenizer(str(folder))
        else:
            name = preset_of(family)
            assert name is not None, (
                f"no preset carries the {family} family: add one (or list it in NO_PRESET)"
            )
            out[family] = load_tokenizer(name)
            FimFormat.teach_reserved(out[family])
    return out
