"""Presets made f16-exact for GGUF round trips, and the families GGUF carries and transformers reads back."""

from __future__ import annotations

from pathlib import Path

from codetune.fim import FimFormat
from codetune.modeling.loading import load_model, load_tokenizer

# The families GGUF carries and transformers reads back, each by its preset; tiny-gpt-bigcode
# (llama.cpp's `starcoder`) exports but transformers has no reader for it (see test_gpt_bigcode_...).
READ_BACK = {
    "codellama": "tiny-codellama",
    "llama": "tiny-llama",
    "qwen2.5-coder": "tiny-qwen2.5-coder",
    "starcoder2": "tiny-starcoder2",
    "gemma3": "tiny-gemma3",
}


def f16_exact(name: str, folder: Path) -> Path:
    """A copy of the preset whose weights are exactly representable in float16 (and, for Gemma, whose
    tokenizer a build has taught FIM on its reserved tokens)."""
    import torch

    model, tokenizer = load_model(name), load_tokenizer(name)
    FimFormat.teach_reserved(tokenizer)  # as a build does: Gemma's FIM on its reserved tokens
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.half().float())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
