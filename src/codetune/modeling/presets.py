"""Tiny models built locally from the real architecture configs, for tests, demos and the quickstart.

Each preset is a randomly initialised model of a real family (GPTBigCode is StarCoder's
architecture) with a byte-level BPE tokenizer trained here on the Python standard library and
carrying StarCoder's FIM tokens. They are built once and cached, so nothing is ever downloaded.
Dropout is 0 everywhere: GPTBigCode's default 0.1 makes CPU training about 3x slower.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from codetune.files import atomic_dir

PRESET_VOCAB = 4096
PRESET_CONTEXT = 1024
TOKENIZER_SAMPLE_BYTES = 4_000_000


def cache_dir() -> Path:
    """Root of codetune's cache: $CODETUNE_CACHE, else the user cache dir."""
    env = os.environ.get("CODETUNE_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("codetune"))


def stdlib_dir() -> Path:
    """The Python standard library of this interpreter: code present on every machine."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_texts(limit_bytes: int = TOKENIZER_SAMPLE_BYTES) -> Iterator[str]:
    """Deterministic sample of standard-library sources (tests and site-packages excluded)."""
    total = 0
    root = stdlib_dir()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if rel[0] in {"site-packages", "test", "idlelib", "lib2to3"} or "tests" in rel:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        total += len(text)
        yield text
        if total >= limit_bytes:
            return


def preset_tokenizer_dir() -> Path:
    """Train (once) and return the tokenizer every preset shares."""
    from codetune.modeling.tokenizer import train_tokenizer_from_texts

    folder = cache_dir() / "tokenizers" / f"stdlib-bpe-{PRESET_VOCAB}"
    if not (folder / "tokenizer.json").is_file():
        train_tokenizer_from_texts(stdlib_texts(), PRESET_VOCAB, folder)
    return folder


def _gpt_bigcode(tok: Any) -> Any:
    from transformers import GPTBigCodeConfig

    return GPTBigCodeConfig(
        vocab_size=len(tok),
        n_positions=PRESET_CONTEXT,
        n_embd=256,
        n_layer=4,
        n_head=4,
        multi_query=True,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def _starcoder2(tok: Any) -> Any:
    from transformers import Starcoder2Config

    return Starcoder2Config(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=PRESET_CONTEXT,
        residual_dropout=0.0,
        embedding_dropout=0.0,
        attention_dropout=0.0,
        sliding_window=None,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def _phi(tok: Any) -> Any:
    from transformers import PhiConfig

    return PhiConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=PRESET_CONTEXT,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        partial_rotary_factor=0.5,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def _codegen(tok: Any) -> Any:
    from transformers import CodeGenConfig

    return CodeGenConfig(
        vocab_size=len(tok),
        n_positions=PRESET_CONTEXT,
        n_ctx=PRESET_CONTEXT,
        n_embd=256,
        n_layer=4,
        n_head=4,
        rotary_dim=32,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def _llama(tok: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=PRESET_CONTEXT,
        attention_dropout=0.0,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def _t5(tok: Any) -> Any:
    from transformers import T5Config

    return T5Config(
        vocab_size=len(tok),
        d_model=256,
        d_ff=512,
        d_kv=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    )


PRESETS: dict[str, Callable[[Any], Any]] = {
    "tiny-gpt-bigcode": _gpt_bigcode,
    "tiny-starcoder2": _starcoder2,
    "tiny-phi": _phi,
    "tiny-codegen": _codegen,
    "tiny-llama": _llama,
    "tiny-t5": _t5,
}
SEQ2SEQ_PRESETS = frozenset({"tiny-t5"})


def is_preset(name: str) -> bool:
    return name in PRESETS


def preset_dir(name: str) -> Path:
    """Build (once) and return the folder of a tiny preset: config, random weights, tokenizer."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        GenerationConfig,
        PreTrainedTokenizerFast,
    )

    folder = cache_dir() / "presets" / name
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    tokenizer = PreTrainedTokenizerFast.from_pretrained(preset_tokenizer_dir())
    config = PRESETS[name](tokenizer)
    torch.manual_seed(0)
    auto = AutoModelForSeq2SeqLM if name in SEQ2SEQ_PRESETS else AutoModelForCausalLM
    model = auto.from_config(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=getattr(config, "bos_token_id", None),
        decoder_start_token_id=getattr(config, "decoder_start_token_id", None),
    )
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder
