"""`codetune export`: a run (adapter merged in memory) or a model -> one GGUF file + its Ollama Modelfile.

The model is staged as a float32 Hugging Face folder beside the output, converted by llama.cpp's
converter (codetune.export.gguf) into a hidden partial file, and renamed into place: a failed export
leaves nothing. Then, unless ``check_prompts`` is 0, the GGUF is loaded back through ``--model FILE.gguf``
(codetune.modeling.gguf) and its greedy text compared with the model's (codetune.export.parity).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from codetune.artifacts.manifest import write_manifest
from codetune.errors import ConfigError, InputError
from codetune.export.config import ExportConfig
from codetune.export.gguf import ExportError, convert_folder, fim_metadata, require_converter
from codetune.export.ollama import modelfile, modelfile_path
from codetune.export.parity import Parity, check_prompts, compare, greedy
from codetune.files import atomic_write_text, fingerprint
from codetune.fim import FimFormat
from codetune.stage import StageResult, default_out

logger = logging.getLogger(__name__)


def check_output_file(out: Path) -> None:
    """Refuse an --out that is a folder or does not end in .gguf (llama.cpp and Ollama look for it)."""
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give the GGUF file to write, e.g. {out / 'model.gguf'}")
    if out.suffix.lower() != ".gguf":
        raise InputError(f"--out {out}: a GGUF file name ends in .gguf")


def load_for_export(name: str) -> tuple[Any, Any]:
    """The model (its adapter merged) in float32 and its tokenizer."""
    import torch

    from codetune.modeling.loading import load_model, load_tokenizer, resolve_model

    ref = resolve_model(name)
    tokenizer = load_tokenizer(ref)
    model = load_model(ref, dtype=torch.float32)
    if getattr(model.config, "is_encoder_decoder", False):
        raise ExportError(f"{name} is an encoder-decoder model: GGUF export covers decoder-only models")
    if ref.adapter is not None:
        model = model.merge_and_unload()
    return model, tokenizer


def export(cfg: ExportConfig) -> StageResult:
    """Write ``cfg.model`` as a GGUF file (+ Modelfile); report the greedy agreement when checked."""
    if cfg.model is None:
        raise ConfigError("export needs --model (a run folder, a merged model, a preset or a hub id)")
    out = default_out(cfg.out, None, "model.gguf")
    check_output_file(out)
    require_converter()
    model, tokenizer = load_for_export(cfg.model)
    fmt = FimFormat.from_tokenizer(tokenizer)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", suffix=".staging", dir=out.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        convert_folder(staging, partial, cfg.dtype, fim_metadata(fmt), name=out.stem)
        os.replace(partial, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    written = [str(out)]
    if cfg.modelfile:
        written.append(str(atomic_write_text(modelfile_path(out), modelfile(out, tokenizer, fmt))))
    parity = check_export(model, tokenizer, out, cfg) if cfg.check_prompts else None
    summary: dict[str, Any] = {
        "dtype": cfg.dtype,
        "size_mb": round(out.stat().st_size / 1e6, 1),
        "fim_family": fmt.family.name if fmt else "none",
        "modelfile": written[1] if cfg.modelfile else "not written",
    }
    if parity is not None:
        summary["greedy_agreement"] = f"{parity.same}/{parity.total}"
    write_manifest(
        out,
        {
            "stage": "export",
            "model": cfg.model,
            "format": cfg.format,
            "dtype": cfg.dtype,
            "files": written,
            "fim_family": summary["fim_family"],
            "parity": None if parity is None else {"same": parity.same, "total": parity.total},
            "parity_differing": [] if parity is None else parity.differing,
            "fingerprint": fingerprint(cfg.model_dump(mode="json", exclude={"out"})),
        },
    )
    return StageResult("export", out, summary)


def check_export(model: Any, tokenizer: Any, gguf_file: Path, cfg: ExportConfig) -> Parity:
    """Greedy text of the model and of the GGUF loaded back (through ``--model FILE.gguf``), compared."""
    from codetune.modeling.loading import load_model, load_tokenizer

    prompts = check_prompts(tokenizer, cfg.check_prompts)
    reference = greedy(model, tokenizer, prompts, cfg.check_tokens)
    back_tokenizer = load_tokenizer(str(gguf_file))
    back = load_model(str(gguf_file))
    parity = compare(prompts, reference, greedy(back, back_tokenizer, prompts, cfg.check_tokens))
    log = logger.info if parity.same == parity.total else logger.warning
    log("%s (%s GGUF loaded back vs the model)", parity.line(), cfg.dtype)
    return parity
