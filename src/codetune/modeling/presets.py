"""Tiny models built locally, each faithful to a real family, for tests, demos and the quickstart.

A preset keeps, scaled down, every property of its real family that changes a code path (attention
layout, sliding window, partial rotary, BOS, FIM tokens, seq2seq) and scales the rest (width, depth,
vocabulary, context). docs/presets.md has the table and the source of each fact.

Tokenizers are trained here on the Python standard library (once, then cached) and carry their
family's special tokens and BOS/EOS conventions; nothing is ever downloaded. Dropout is 0 everywhere:
GPTBigCode's default 0.1 makes CPU training about 3x slower.
"""

from __future__ import annotations

import json
import os
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from codetune.files import atomic_dir, fingerprint

PRESET_VOCAB = 4096
PRESET_CONTEXT = 1024
# StarCoder2's real window is 4096 of a 16384 context; a quarter of the preset context keeps the
# ratio and makes a prompt of a few hundred tokens slide for real.
PRESET_SLIDING_WINDOW = 256
TOKENIZER_SAMPLE_BYTES = 4_000_000
# Bump when a preset or tokenizer changes: caches live under a folder of this version, so an older
# checkout sharing the cache keeps its own presets.
PRESETS_VERSION = 4  # weights; bump when a preset's config or initialisation changes
TOKENIZERS_VERSION = 3  # bump when a tokenizer spec changes
BASE_VOCAB_VERSION = 2  # bump when the shared trained vocabularies (or their training text) change


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


# --- tokenizers -------------------------------------------------------------------------------------


def _fim_tokens(family: str) -> tuple[str, ...]:
    from codetune.fim import FAMILIES

    entry = FAMILIES[family]
    return (*entry.sentinels, *(token for pair in entry.repo[:1] for token in pair))


@dataclass(frozen=True)
class TokenizerSpec:
    """A family's tokenizer conventions: model kind, special tokens, BOS/EOS, tokenizer class."""

    # byte-level: GPT-2 style BPE; sentencepiece: Llama style (▁ for spaces, byte fallback, <unk>);
    # gemma: transformers' GemmaTokenizer (▁ for spaces but none prepended, byte fallback, Gemma's ids).
    kind: Literal["byte-level", "sentencepiece", "gemma"]
    eos: str
    bos: str | None = None
    unk: str | None = None
    pad: str | None = None
    add_bos: bool = False
    # Special tokens besides bos/eos/unk/pad (FIM, repository, chat), added after the vocabulary.
    extra: Callable[[], tuple[str, ...]] = tuple
    tokenizer_class: str = "PreTrainedTokenizerFast"
    config: dict[str, Any] = field(default_factory=dict)
    # A byte-level family's own pre-tokenizer split (a regex), where it is not GPT-2's.
    split: Callable[[], str] | None = None


def _qwen2_split() -> str:
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    return PRETOKENIZE_REGEX


# Gemma 3's first 107 ids (google/gemma-3-270m tokenizer, as its GGUF lists them): pad, eos, bos, unk,
# mask, [multimodal], <unused0>..<unused98>, <start_of_turn>, <end_of_turn>.
GEMMA_SPECIALS = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "[multimodal]",
    *(f"<unused{i}>" for i in range(99)),
    "<start_of_turn>",
    "<end_of_turn>",
)


TOKENIZERS: dict[str, TokenizerSpec] = {
    # bigcode/starcoder2-*: GPT2Tokenizer, <|endoftext|> is bos, eos and unk, no pad, no BOS added.
    "starcoder": TokenizerSpec(
        "byte-level",
        eos="<|endoftext|>",
        bos="<|endoftext|>",
        unk="<|endoftext|>",
        extra=lambda: _fim_tokens("starcoder"),
        tokenizer_class="GPT2Tokenizer",
    ),
    # Salesforce/codegen-350M-mono (and microsoft/phi-1): CodeGenTokenizer, GPT-2 BPE, no FIM tokens.
    "codegen": TokenizerSpec(
        "byte-level",
        eos="<|endoftext|>",
        bos="<|endoftext|>",
        unk="<|endoftext|>",
        tokenizer_class="CodeGenTokenizer",
    ),
    # Llama 2: SentencePiece BPE with byte fallback, <unk>=0 <s>=1 </s>=2, BOS added, no pad
    # (transformers LlamaTokenizer defaults).
    "llama": TokenizerSpec(
        "sentencepiece", eos="</s>", bos="<s>", unk="<unk>", add_bos=True, tokenizer_class="LlamaTokenizer"
    ),
    # codellama/CodeLlama-*-hf: the Llama tokenizer plus ▁<PRE> ▁<SUF> ▁<MID> ▁<EOT> (transformers
    # CodeLlamaTokenizer defaults; meta-llama/codellama llama/tokenizer.py).
    "codellama": TokenizerSpec(
        "sentencepiece",
        eos="</s>",
        bos="<s>",
        unk="<unk>",
        add_bos=True,
        extra=lambda: _fim_tokens("codellama"),
        tokenizer_class="CodeLlamaTokenizer",
        config={"fill_token": None},
    ),
    # deepseek-ai/deepseek-coder-*-base: byte-level BPE (README Q&A), LlamaTokenizerFast class,
    # BOS <｜begin▁of▁sentence｜> added, EOS <｜end▁of▁sentence｜> (id 32014), pad = EOS.
    "deepseek-coder": TokenizerSpec(
        "byte-level",
        eos="<｜end▁of▁sentence｜>",
        bos="<｜begin▁of▁sentence｜>",
        pad="<｜end▁of▁sentence｜>",
        add_bos=True,
        extra=lambda: _fim_tokens("deepseek-coder"),
        tokenizer_class="LlamaTokenizerFast",
    ),
    # Qwen/Qwen2.5-Coder-*: Qwen2Tokenizer, byte-level BPE split by Qwen2's regex (digits one by one),
    # no BOS, EOS = pad = <|endoftext|> (transformers Qwen2Tokenizer defaults), ChatML and FIM/repository
    # tokens.
    "qwen2.5-coder": TokenizerSpec(
        "byte-level",
        eos="<|endoftext|>",
        pad="<|endoftext|>",
        unk=None,
        extra=lambda: ("<|im_start|>", "<|im_end|>", *_fim_tokens("qwen2.5-coder")),
        tokenizer_class="Qwen2Tokenizer",
        split=_qwen2_split,
    ),
    # google/gemma-3-*: GemmaTokenizer (BPE with byte fallback, spaces as ▁ with none prepended), BOS
    # <bos> added to every text, EOS <eos>, pad <pad>, Gemma's special ids; no FIM tokens: codetune's
    # FIM for Gemma uses its reserved <unused*> tokens (codetune/fim.py, family "gemma").
    "gemma": TokenizerSpec(
        "gemma",
        eos="<eos>",
        bos="<bos>",
        unk="<unk>",
        pad="<pad>",
        add_bos=True,
        extra=lambda: tuple(t for t in GEMMA_SPECIALS[4:] if t.startswith("<")),
        tokenizer_class="GemmaTokenizer",
    ),
    # T5-style seq2seq: <pad> (also the decoder start), </s>, <unk>; no FIM tokens.
    "t5": TokenizerSpec("byte-level", eos="</s>", unk="<unk>", pad="<pad>"),
}


def _train_base(kind: str) -> Path:
    """Train (once) the vocabulary every tokenizer of a kind shares; returns its tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path = cache_dir() / "tokenizers" / f"v{BASE_VOCAB_VERSION}-{kind}-{PRESET_VOCAB}" / "tokenizer.json"
    if path.is_file():
        return path
    if kind == "byte-level":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=PRESET_VOCAB,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.BpeTrainer(vocab_size=PRESET_VOCAB - 3 - 256, show_progress=False)
    tokenizer.train_from_iterator(stdlib_texts(), trainer=trainer)
    with atomic_dir(path.parent) as tmp:
        tokenizer.save(str(tmp / "tokenizer.json"))
    return path


def _sentencepiece_model(base: dict[str, Any], unk: str, bos: str, eos: str) -> Any:
    """Llama's layout: <unk> <s> </s>, then the 256 byte-fallback pieces, then the learned pieces.

    SentencePiece BPE merges by piece score, not by a list of merges: any two adjacent pieces whose
    join is a piece may merge, the best-scored join first. transformers turns a tokenizer.model into
    merges that way (``generate_merges``: every split of every piece, ordered by its score), and so
    does its GGUF reader; the preset's merges are made the same way, from scores that fall with the id.
    """
    from tokenizers import models
    from transformers.tokenization_utils_base import generate_merges

    vocab = {unk: 0, bos: 1, eos: 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for token, _ in sorted(base["model"]["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    merges = generate_merges(vocab, {token: -float(index) for token, index in vocab.items()})
    return models.BPE(vocab=vocab, merges=merges, unk_token=unk, byte_fallback=True, fuse_unk=True)


def _merges(base: dict[str, Any]) -> list[tuple[str, ...]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in base["model"]["merges"]]


def _build_gemma_tokenizer(spec: TokenizerSpec, out: Path) -> None:
    """Gemma's tokenizer, built by transformers' own GemmaTokenizer over the shared ▁-vocabulary.

    The ids follow Gemma 3's: its 107 special and reserved tokens first, then the 256 byte-fallback
    pieces, then the learned pieces, merged by score as SentencePiece does (``_sentencepiece_model``).
    The reserved tokens are special (CONTROL in Gemma's GGUF).
    """
    from transformers import GemmaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    base = json.loads(_train_base("sentencepiece").read_text(encoding="utf-8"))
    vocab = {token: index for index, token in enumerate(GEMMA_SPECIALS)}
    vocab |= {f"<0x{b:02X}>": len(vocab) + b for b in range(256)}
    for token, _ in sorted(base["model"]["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    reserved = [token for token in spec.extra() if token not in _named(spec)]
    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=generate_merges(vocab, {token: -float(index) for token, index in vocab.items()}),
        add_bos_token=spec.add_bos,
        add_eos_token=False,
        additional_special_tokens=reserved,
        clean_up_tokenization_spaces=False,
        model_max_length=PRESET_CONTEXT,
    )
    tokenizer.save_pretrained(out)


def _named(spec: TokenizerSpec) -> list[str]:
    return [t for t in (spec.bos, spec.eos, spec.unk, spec.pad) if t]


def build_tokenizer(spec: TokenizerSpec, out: Path) -> None:
    """Write a tokenizer folder for ``spec`` (tokenizer.json + tokenizer_config.json) into ``out``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if spec.kind == "gemma":
        _build_gemma_tokenizer(spec, out)
        return
    base = json.loads(_train_base(spec.kind).read_text(encoding="utf-8"))
    if spec.kind == "byte-level":
        tokenizer = Tokenizer(models.BPE(vocab=base["model"]["vocab"], merges=_merges(base)))
        if spec.split is None:
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        else:
            tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(spec.split()), behavior="isolated"),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                ]
            )
        tokenizer.decoder = decoders.ByteLevel()
    else:
        assert spec.unk and spec.bos
        tokenizer = Tokenizer(_sentencepiece_model(base, spec.unk, spec.bos, spec.eos))
        # As transformers' LlamaTokenizer builds it: one ▁ before the text, spaces become ▁, and the
        # decoder strips that first space again.
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="first", split=False
        )
        tokenizer.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
    named = _named(spec)
    extra = [t for t in spec.extra() if t not in named]
    tokenizer.add_special_tokens(list(dict.fromkeys([*named, *extra])))
    if spec.add_bos:
        bos_id = tokenizer.token_to_id(spec.bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{spec.bos} $A", pair=f"{spec.bos} $A {spec.bos} $B", special_tokens=[(spec.bos, bos_id)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=spec.bos,
        eos_token=spec.eos,
        unk_token=spec.unk,
        pad_token=spec.pad,
        additional_special_tokens=extra,
        clean_up_tokenization_spaces=False,
        model_max_length=PRESET_CONTEXT,
    )
    fast.save_pretrained(out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config |= {"tokenizer_class": spec.tokenizer_class, "add_bos_token": spec.add_bos, "add_eos_token": False}
    config |= spec.config
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


# --- model configs ----------------------------------------------------------------------------------

_NO_DROPOUT = {"attention_dropout": 0.0}


def _ids(tok: Any) -> dict[str, Any]:
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    return {"bos_token_id": bos, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}


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
        **_ids(tok),
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
        sliding_window=PRESET_SLIDING_WINDOW,
        use_bias=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        residual_dropout=0.0,
        embedding_dropout=0.0,
        **_NO_DROPOUT,
        **_ids(tok),
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
        partial_rotary_factor=0.5,
        **_NO_DROPOUT,
        **_ids(tok),
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
        **_ids(tok),
    )


def _llama_like(tok: Any, **overrides: Any) -> Any:
    from transformers import LlamaConfig

    settings: dict[str, Any] = {
        "vocab_size": len(tok),
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": PRESET_CONTEXT,
        **_NO_DROPOUT,
        **_ids(tok),
    }
    return LlamaConfig(**(settings | overrides))


def _llama(tok: Any) -> Any:
    return _llama_like(tok)


def _codellama(tok: Any) -> Any:
    return _llama_like(tok, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0})


def _deepseek_coder(tok: Any) -> Any:
    # deepseek-coder-*-base: LlamaForCausalLM, rope_theta 100000, linear RoPE scaling by 4 (README Q&A).
    return _llama_like(tok, rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 100_000.0})


def _qwen2(tok: Any) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=PRESET_CONTEXT,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        use_sliding_window=False,
        tie_word_embeddings=True,
        **_NO_DROPOUT,
        **_ids(tok),
    )


def _gemma3(tok: Any) -> Any:
    from transformers import Gemma3TextConfig

    # google/gemma-3-270m: five sliding-window layers, then one global layer, repeated; one K/V head;
    # 4 heads of 256 (wider than the model: 640 there, 256 here); the local layers' RoPE base is 10k,
    # the global ones' 1M; queries scaled by query_pre_attn_scalar = head_dim ** -0.5 (llama.cpp's
    # rule for every Gemma 3 but the 27B, so a GGUF, which does not store it, keeps it).
    layers = ["sliding_attention"] * 5 + ["full_attention"]
    return Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=len(layers),
        layer_types=layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        max_position_embeddings=PRESET_CONTEXT,
        sliding_window=PRESET_SLIDING_WINDOW,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
        },
        rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True,
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        **_NO_DROPOUT,
        **_ids(tok),
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


def _t5_output_scale(model: Any) -> None:
    """Scale the untied LM head as a tied T5 scales its output (d_model ** -0.5).

    transformers draws an untied T5 head with std 1.0 (T5 v1.1 / Flan-T5 are pretrained from
    there with Adafactor), which gives the tiny random model logits of std ~16 and a first loss
    ~130: a few CPU steps at a LoRA learning rate then generate nothing. The untied head, the
    code path of Flan-T5 that matters, is kept.
    """
    import torch

    with torch.no_grad():
        model.lm_head.weight.mul_(model.config.d_model**-0.5)


@dataclass(frozen=True)
class Preset:
    """A tiny model: which tokenizer, which config, and the real family it stands for."""

    name: str
    tokenizer: str
    config: Callable[[Any], Any]
    family: str
    seq2seq: bool = False
    initialise: Callable[[Any], None] | None = None  # after transformers' own random init


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    PRESETS[preset.name] = preset
    return preset


register_preset(Preset("tiny-gpt-bigcode", "starcoder", _gpt_bigcode, "StarCoder / SantaCoder (GPTBigCode)"))
register_preset(Preset("tiny-starcoder2", "starcoder", _starcoder2, "StarCoder2"))
register_preset(Preset("tiny-phi", "codegen", _phi, "Phi-1 / Phi-1.5"))
register_preset(Preset("tiny-codegen", "codegen", _codegen, "CodeGen-mono"))
register_preset(Preset("tiny-llama", "llama", _llama, "Llama 2"))
register_preset(Preset("tiny-codellama", "codellama", _codellama, "Code Llama"))
register_preset(Preset("tiny-deepseek-coder", "deepseek-coder", _deepseek_coder, "DeepSeek-Coder"))
register_preset(Preset("tiny-qwen2.5-coder", "qwen2.5-coder", _qwen2, "Qwen2.5-Coder"))
register_preset(Preset("tiny-gemma3", "gemma", _gemma3, "Gemma 3"))
register_preset(Preset("tiny-t5", "t5", _t5, "CodeT5 (T5)", seq2seq=True, initialise=_t5_output_scale))


def is_preset(name: str) -> bool:
    return name in PRESETS


def preset_tokenizer_dir(tokenizer: str) -> Path:
    """Build (once) and return the folder of one family's preset tokenizer."""
    folder = cache_dir() / "tokenizers" / f"v{TOKENIZERS_VERSION}-{tokenizer}"
    if not (folder / "tokenizer.json").is_file():
        with atomic_dir(folder) as tmp:
            build_tokenizer(TOKENIZERS[tokenizer], tmp)
    return folder


def preset_fingerprint(name: str) -> str:
    """What decides a preset's weights and tokens (its config and its tokenizer's vocabulary, merges and
    special tokens), hashed: unlike the version counters above, it moves only when this preset changes."""
    from transformers import AutoTokenizer

    preset = PRESETS[name]
    tokenizer = AutoTokenizer.from_pretrained(preset_tokenizer_dir(preset.tokenizer))
    config = preset.config(tokenizer).to_dict()
    config.pop("transformers_version", None)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocabulary = {key: spec["model"].get(key) for key in ("type", "vocab", "merges", "byte_fallback")}
    specials = sorted(tokenizer.all_special_tokens)
    return fingerprint(config, vocabulary, specials, preset.seq2seq)


def preset_dir(name: str) -> Path:
    """Build (once) and return the folder of a tiny preset: config, random weights, tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

    folder = cache_dir() / f"presets-v{PRESETS_VERSION}" / name
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    preset = PRESETS[name]
    tokenizer = AutoTokenizer.from_pretrained(preset_tokenizer_dir(preset.tokenizer))
    config = preset.config(tokenizer)
    torch.manual_seed(0)
    auto = AutoModelForSeq2SeqLM if preset.seq2seq else AutoModelForCausalLM
    model = auto.from_config(config)
    if preset.initialise is not None:
        preset.initialise(model)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=getattr(config, "bos_token_id", None),
        decoder_start_token_id=getattr(config, "decoder_start_token_id", None),
    )
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        for source in sorted(preset_tokenizer_dir(preset.tokenizer).iterdir()):
            (tmp / source.name).write_bytes(source.read_bytes())
    return folder
