"""Merge a run's LoRA/AdaLoRA adapter into its base: a plain Hugging Face folder (transformers, vLLM).

The merged model's logits are compared with the adapter model's on a few validation examples
before anything is written; the largest difference is reported and must be under ``atol``. Both
sides are computed in fp32: merging in bf16 alone moves logits by ~0.02 (bf16 keeps 8 bits of
mantissa), which would hide a wrong merge inside rounding or fail a right one. The merged weights
are then saved in the base checkpoint's own dtype (bf16 for a QLoRA run merged with dequantize).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from codetune.artifacts.dataset import read_dataset
from codetune.artifacts.manifest import check_output_folder, write_manifest
from codetune.artifacts.run import read_run
from codetune.errors import CodetuneError, ConfigError, InputError
from codetune.files import atomic_dir, fingerprint
from codetune.stage import StageResult, default_out
from codetune.train.config import MergeConfig

logger = logging.getLogger(__name__)


def check_samples(manifest: dict[str, Any], tokenizer: Any, count: int) -> list[list[int]]:
    """Token ids to compare on: the run's validation examples, else a few lines of code."""
    try:
        split = read_dataset(manifest.get("dataset", "")).split("valid")
        samples = [list(ids)[:128] for ids in split.select(range(min(count, len(split))))["input_ids"]]
    except Exception:  # the dataset may have moved: any code will do
        texts = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n"]
        samples = [tokenizer(text)["input_ids"] for text in texts * count][:count]
    return [s for s in samples if s]


def logits_of(model: Any, ids: list[int]) -> Any:
    """Logits for one sequence (encoder-decoder models decode the same ids)."""
    import torch

    batch = torch.tensor([ids])
    if getattr(model.config, "is_encoder_decoder", False):
        return model(input_ids=batch, decoder_input_ids=batch).logits[0].float()
    return model(input_ids=batch).logits[0].float()


def merge(cfg: MergeConfig) -> StageResult:
    """Merge ``cfg.run``'s adapter into the base and save it with tokenizer + generation config."""
    import torch

    from codetune.modeling.loading import load_model, load_tokenizer, resolve_model

    if cfg.run is None:
        raise ConfigError("merge needs a run folder")
    run = Path(cfg.run)
    out = default_out(cfg.out, None, "merged")
    check_output_folder(out, stage="merge")
    folder = read_run(run)
    manifest = folder.manifest
    if folder.model is not None:
        raise InputError(
            f"{run} is a full fine-tune: {folder.model} is already a plain model, nothing to merge"
        )
    if manifest.get("method") == "qlora" and not cfg.dequantize:
        raise ConfigError(
            "this run trained over a 4-bit base: merging into 4-bit weights loses the adapter's precision; "
            "add --set dequantize=true to merge into a bf16 copy of the base"
        )

    ref = resolve_model(run)
    tokenizer = load_tokenizer(ref)
    saved_dtype = torch.bfloat16 if manifest.get("method") == "qlora" else checkpoint_dtype(ref.base)
    model = load_model(ref, dtype=torch.float32)
    samples = check_samples(manifest, tokenizer, cfg.check_samples)
    with torch.no_grad():
        before = [logits_of(model, ids) for ids in samples]
        merged = model.merge_and_unload()
        after = [logits_of(merged, ids) for ids in samples]
        diff = largest_difference(before, after)
        logger.info("merge check (fp32): max |logit difference| = %.3g over %d samples", diff, len(samples))
        if diff > cfg.atol:
            raise CodetuneError(
                f"merged model differs from the adapter model: max logit difference {diff:.3g} > {cfg.atol}"
            )
        rounding = 0.0
        if saved_dtype != torch.float32:
            merged = merged.to(saved_dtype)
            rounding = largest_difference(before, [logits_of(merged, ids) for ids in samples])
            logger.info("saved in %s: max |logit difference| to fp32 = %.3g", saved_dtype, rounding)

    with atomic_dir(out, check=partial(check_output_folder, stage="merge")) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if getattr(merged, "generation_config", None) is not None:
            merged.generation_config.save_pretrained(tmp)
        write_manifest(
            tmp,
            {
                "stage": "merge",
                "run": str(run),
                "model": manifest.get("model"),
                "method": manifest.get("method"),
                "max_logit_diff": diff,
                "dtype": str(saved_dtype).removeprefix("torch."),
                "max_logit_diff_after_cast": rounding,
                "fingerprint": fingerprint(
                    cfg.model_dump(mode="json", exclude={"out"}), manifest.get("fingerprint")
                ),
            },
        )
    summary = {
        "max_logit_diff": diff,
        "samples": len(samples),
        "method": manifest.get("method"),
        "dtype": str(saved_dtype).removeprefix("torch."),
        "max_logit_diff_after_cast": round(rounding, 4),
    }
    return StageResult("merge", out, summary)


def largest_difference(before: list[Any], after: list[Any]) -> float:
    return max((float((a - b).abs().max()) for a, b in zip(before, after, strict=True)), default=0.0)


def checkpoint_dtype(base: str) -> Any:
    """The dtype the base checkpoint is stored in (config.json's dtype; fp32 when it names none)."""
    import torch

    from codetune.modeling.loading import load_config

    config = load_config(base)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32
