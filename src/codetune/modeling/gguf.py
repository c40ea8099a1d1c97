"""GGUF files as models: converted once into the cache as a Hugging Face folder, then loaded as usual.

``--model FILE.gguf`` (or a folder holding one) works wherever a model is accepted because
:func:`codetune.modeling.loading.resolve_model` turns it into the converted folder. The folder is keyed
by the file's SHA-256, so a changed file converts again and the same file never does. transformers reads
the weights (dequantized to float32) and rebuilds the tokenizer from the file's vocabulary, which takes
minutes for a 262,144-token vocabulary: done once, then the folder loads in seconds.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.errors import ModelLoadError
from codetune.files import atomic_dir, write_json
from codetune.fim import FimFormat

logger = logging.getLogger(__name__)

GGUF_SUFFIX = ".gguf"
# Bump when what a converted folder holds changes: folders of older versions are then left alone.
CONVERTED_VERSION = 1
INSTALL_HINT = "install it with `pip install 'codetune[gguf]'` (or `pip install gguf`)"
# transformers' GGUF reader leaves these keys out of the config it rebuilds (transformers 5.25):
# (architecture, GGUF key) -> config field. The files do carry them, and llama.cpp reads them.
_DROPPED_KEYS = {("starcoder2", "rope.freq_base"): "rope_theta"}


@dataclass(frozen=True)
class GgufInfo:
    """What a GGUF's header says: enough to check it before converting anything."""

    path: Path
    architecture: str
    name: str
    tensors: int
    metadata: dict[str, Any]


def find_gguf(path: Path) -> Path | None:
    """The GGUF file ``path`` names: the file itself, or the one ``.gguf`` in a folder with no config.json."""
    if path.is_file():
        return path if path.suffix.lower() == GGUF_SUFFIX else None
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == GGUF_SUFFIX and p.is_file())
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:4])
        raise ModelLoadError(f"{path} holds {len(found)} GGUF files ({names}): pass the one to load")
    return found[0] if found else None


def sha256_file(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def expected_sha256(path: Path) -> tuple[str, Path] | None:
    """The hash published beside the file: ``NAME.sha256`` or a ``SHA256SUMS`` line naming it."""
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        words = sidecar.read_text(encoding="utf-8", errors="replace").split()
        return (words[0].lower() if words else "", sidecar)
    sums = path.with_name("SHA256SUMS")
    if sums.is_file():
        for line in sums.read_text(encoding="utf-8", errors="replace").splitlines():
            words = line.split()
            if len(words) >= 2 and words[-1].lstrip("*") == path.name:
                return words[0].lower(), sums
    return None


def require_gguf() -> None:
    """The ``gguf`` package, or the one-line error saying how to install it."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ModelLoadError(f"reading a GGUF file needs the `gguf` package: {INSTALL_HINT}") from None


def read_info(path: Path) -> GgufInfo:
    """The header of a GGUF file, checked: magic, metadata, and every tensor inside the file."""
    require_gguf()
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        size = path.stat().st_size
        for tensor in reader.tensors:
            if tensor.data_offset + tensor.n_bytes > size or tensor.data.nbytes != tensor.n_bytes:
                raise ValueError(f"tensor {tensor.name} runs past the end of the file")
        metadata = {key: _field_value(field) for key, field in reader.fields.items() if _is_scalar(key)}
    except Exception as error:  # the reader raises ValueError, IndexError, struct errors... on bad bytes
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{path} is not a readable GGUF file (truncated or corrupt: {reason})") from None
    architecture = str(metadata.get("general.architecture", ""))
    if not architecture:
        raise ModelLoadError(f"{path} is not a readable GGUF file (no general.architecture)")
    return GgufInfo(path, architecture, str(metadata.get("general.name", "")), len(reader.tensors), metadata)


def _is_scalar(key: str) -> bool:
    return not key.startswith(
        ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
    ) and (key != "tokenizer.ggml.merges")


def _field_value(field: Any) -> Any:
    try:
        return field.contents()
    except Exception:  # a value this gguf version cannot decode: not one codetune reads
        return None


def readable_architectures() -> set[str]:
    """The GGUF architectures this transformers builds a model from."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    archs = set(GGUF_SUPPORTED_ARCHITECTURES)
    try:
        from transformers.integrations.gguf import GGUF_ARCHS

        archs |= set(GGUF_ARCHS)
    except ImportError:  # an older transformers with the one reader only
        pass
    return archs - {"general", "tokenizer"}


def check_architecture(info: GgufInfo) -> None:
    """A clear error for an architecture transformers does not read (GPTBigCode's ``starcoder`` among them)."""
    readable = readable_architectures()
    if info.architecture in readable:
        return
    hint = (
        " (GPTBigCode / StarCoder 1: llama.cpp runs it, transformers has no reader for it; load the "
        "Hugging Face folder it was exported from instead)"
        if info.architecture == "starcoder"
        else ""
    )
    raise ModelLoadError(
        f"{info.path}: GGUF architecture {info.architecture!r} is not one transformers reads{hint}; it reads "
        f"{', '.join(sorted(readable))}"
    )


def converted_dir(digest: str) -> Path:
    """Where the Hugging Face folder converted from a GGUF with this SHA-256 lives."""
    from codetune.modeling.presets import cache_dir

    return cache_dir() / "gguf" / f"v{CONVERTED_VERSION}-{digest[:32]}"


def tokenizer_cache_dir(path: Path) -> Path:
    """Where the tokenizer rebuilt from this GGUF's tokenizer metadata (every ``tokenizer.*`` key) lives."""
    from gguf import GGUFReader

    from codetune.modeling.presets import cache_dir

    digest = hashlib.sha256()
    reader = GGUFReader(str(path))
    for key in sorted(k for k in reader.fields if k.startswith("tokenizer.")):
        digest.update(key.encode())
        for part in reader.fields[key].parts:
            digest.update(part.tobytes())
    return cache_dir() / "gguf" / "tokenizers" / f"v{CONVERTED_VERSION}-{digest.hexdigest()[:32]}"


def _is_converted(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("config.json", "tokenizer.json", "source.json"))


def checked_sha256(path: Path) -> str:
    """The file's SHA-256, checked against the one published beside it (ModelLoadError on a mismatch)."""
    digest = sha256_file(path)
    published = expected_sha256(path)
    if published is not None and published[0] != digest:
        raise ModelLoadError(
            f"{path}: its SHA-256 is {digest}, but {published[1].name} says {published[0] or '(empty)'}: the "
            "file is corrupt or was changed; nothing was loaded"
        )
    return digest


def gguf_to_hf(path: Path) -> Path:
    """The Hugging Face folder of a GGUF file: converted now (once, atomically) or found in the cache."""
    path = Path(path)
    digest = checked_sha256(path)
    folder = converted_dir(digest)
    if _is_converted(folder):
        return folder
    info = read_info(path)
    check_architecture(info)
    megabytes = path.stat().st_size / 1e6
    print(
        f"converting {path.name} ({megabytes:.0f} MB, {info.architecture}, sha256 {digest[:12]}) to a Hugging "
        f"Face folder in {folder} (once; a large vocabulary takes minutes)",
        file=sys.stderr,
        flush=True,
    )
    try:
        with atomic_dir(folder) as tmp:
            _convert(info, tmp)
            write_json(
                tmp / "source.json", {"gguf": str(path.resolve()), "sha256": digest, "name": info.name}
            )
    except ModelLoadError:
        raise
    except Exception as error:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{path}: transformers could not convert this GGUF ({reason})") from None
    return folder


def gguf_tokenizer(info: GgufInfo) -> Any:
    """The Hugging Face tokenizer of a GGUF, rebuilt from its ``tokenizer.*`` metadata (once, cached).

    Rebuilding is the slow part of reading a GGUF (minutes for Gemma's vocabulary); GGUFs with the
    same tokenizer metadata (a model and its exports in another dtype, re-exports) share one.
    """
    from transformers import AutoTokenizer

    shared = tokenizer_cache_dir(info.path)
    if (shared / "tokenizer.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(shared))
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(info.path.parent), gguf_file=info.path.name)
        with atomic_dir(shared) as tmp:
            tokenizer.save_pretrained(tmp)
    # A GGUF codetune exported names its FIM ids; on reserved tokens (Gemma's) they say the model was
    # taught that layout, which the tokenizer records as a build's would.
    keys = [info.metadata.get(f"tokenizer.ggml.fim_{key}_token_id") for key in ("pre", "suf", "mid")]
    if all(key is not None for key in keys):
        FimFormat.teach_reserved(tokenizer, [int(key) for key in keys])
    return tokenizer


def _convert(info: GgufInfo, out: Path) -> None:
    """Dequantize the weights and rebuild the tokenizer through transformers, then save both to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = gguf_tokenizer(info)
    model = AutoModelForCausalLM.from_pretrained(
        str(info.path.parent), gguf_file=info.path.name, dtype=torch.float32
    )
    _restore_dropped_keys(model.config, info)
    # A model read from a GGUF carries the GGUF "quantizer", and save_pretrained refuses quantized
    # models it cannot serialise; the weights are plain float32 tensors by now.
    model.hf_quantizer = None
    for holder in (model.config, getattr(model, "generation_config", None)):
        if holder is not None and hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")
    model.config.name_or_path = info.name or info.path.stem
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _restore_dropped_keys(config: Any, info: GgufInfo) -> None:
    for (architecture, key), field in _DROPPED_KEYS.items():
        value = info.metadata.get(f"{architecture}.{key}")
        if info.architecture != architecture or value is None:
            continue
        if field == "rope_theta" and isinstance(getattr(config, "rope_parameters", None), dict):
            config.rope_parameters = {**config.rope_parameters, "rope_theta": float(value)}
        else:
            setattr(config, field, value)
