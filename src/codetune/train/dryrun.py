"""`codetune train --dry-run`: the plan of a run before any download, without weights or network.

The model is built from its config on the meta device (shapes, no storage), wrapped by the same
method function training uses, and counted. The config comes from the local folder or preset, the
hub (or its cache) when reachable, or else from the bundled real configs in ``modeling/configs``.
Memory is an estimate, not a measurement: the formulas are spelled out in ``estimate_memory``.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from codetune.artifacts.dataset import read_stats
from codetune.errors import CodetuneError, ModelLoadError

logger = logging.getLogger(__name__)

GIB = 2**30
# AdamW keeps two fp32 moments per trainable parameter.
ADAM_BYTES = 8
# Assumed when neither the dataset nor max_steps says how long the run is (AdaLoRA needs a schedule).
NOMINAL_STEPS = 1000


@dataclass(frozen=True)
class ModelSource:
    """A model config and where it was read from."""

    config: Any
    origin: str  # "local", "preset", "hub" or "bundled"
    where: str


def _bundled_dir() -> Any:
    return resources.files("codetune.modeling").joinpath("configs")


def bundled_models() -> list[str]:
    """Hub ids whose real config.json ships with codetune."""
    names = [entry.name for entry in _bundled_dir().iterdir() if entry.name.endswith(".json")]
    return sorted(name.removesuffix(".json").replace("--", "/", 1) for name in names)


def bundled_config(name: str) -> dict[str, Any] | None:
    """The bundled config.json of a hub id (with its ``_source``), or None."""
    entry = _bundled_dir().joinpath(name.replace("/", "--", 1) + ".json")
    if not entry.is_file():
        return None
    return json.loads(entry.read_text(encoding="utf-8"))


def _config_from_dict(data: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    fields = {key: value for key, value in data.items() if not key.startswith("_")}
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def resolve_config(name: str) -> ModelSource:
    """The model's config: a preset or local folder, the hub or its cache, else the bundled copy."""
    from codetune.modeling.loading import from_pretrained, resolve_model
    from codetune.modeling.presets import is_preset

    bundled = bundled_config(name)
    if bundled is None:
        from transformers import AutoConfig

        ref = resolve_model(name)
        origin = "preset" if is_preset(name) else "local" if Path(ref.base).exists() else "hub"
        try:
            config = from_pretrained(AutoConfig.from_pretrained, ref.base)
        except ModelLoadError as error:
            raise ModelLoadError(
                f"{error} codetune bundles the configs of: {', '.join(bundled_models())}"
            ) from None
        return ModelSource(config, origin, ref.base)
    from transformers import AutoConfig

    try:  # the hub (or its cache) is the newest word on a config; the bundled copy is the fallback
        return ModelSource(from_pretrained(AutoConfig.from_pretrained, name), "hub", name)
    except ModelLoadError:
        source = bundled.get("_source", {})
        where = source.get("url", name) if isinstance(source, dict) else str(source)
        return ModelSource(_config_from_dict(bundled), "bundled", where)


def describe_source(model: str, origin: str, where: str) -> str:
    """Where the config came from, and for a bundled one what to do to train for real."""
    if origin == "preset":
        return f"the tiny preset {model} (random weights, built here)"
    if origin == "local":
        return f"the local folder {where}"
    if origin == "hub":
        return f"the Hugging Face hub or its cache ({where})"
    gated = "gated" in where
    url = where.split(" (", 1)[0]
    text = f"codetune's copy of {model}'s config.json ({url}), as the hub cannot be reached from here"
    text += "; the weights are not bundled: to train, "
    if gated:
        text += f"accept the model's licence on https://huggingface.co/{model} and log in (`hf auth login`), then "
    return (
        text
        + f"download them where there is network (`hf download {model}`) or pass a local folder to --model"
    )


# GPU sizes to compare an estimate with, in GB as sold (1 GB = 10**9 bytes), with examples.
GPU_SIZES = (
    (8, "RTX 4060, RTX 3070"),
    (12, "RTX 3060, RTX 4070"),
    (16, "T4, V100 16GB, RTX 4080, A4000"),
    (24, "RTX 3090/4090, A10, L4"),
    (40, "A100 40GB"),
    (48, "A6000, L40S"),
    (80, "A100/H100 80GB"),
)
# The common card a plan is warned against outgrowing.
WARN_ABOVE = GPU_SIZES[2]
# Of a card's memory, what training can use: the CUDA context and allocator fragmentation take the rest.
USABLE_SHARE = 0.92


def _fits(total_gib: float) -> tuple[int, str] | None:
    """The smallest listed GPU whose usable memory holds ``total_gib``."""
    for size, examples in GPU_SIZES:
        if total_gib * GIB <= USABLE_SHARE * size * 1e9:
            return size, examples
    return None


def memory_notes(cfg: Any, chosen: dict[str, Any], other_activations_gib: float) -> list[str]:
    """What the estimate assumes about checkpointing, and a warning when it outgrows common GPUs."""
    checkpointing = cfg.gradient_checkpointing
    notes = [
        "activations: "
        + (
            "with gradient checkpointing (each layer's input kept, one layer recomputed at a time)"
            if checkpointing
            else "without gradient checkpointing (every layer's activations kept for the backward pass)"
        )
        + f"; {'without' if checkpointing else 'with'} it: {other_activations_gib:.2f} GiB instead of "
        f"{chosen['activations_gib']:.2f} (--set gradient_checkpointing={str(not checkpointing).lower()})"
    ]
    fits = _fits(chosen["total_gib"])
    if fits is not None:
        notes.append(
            f"{cfg.method} fits a GPU of {fits[0]} GB ({fits[1]}): about {chosen['total_gib']:.1f} GiB"
        )
    size, examples = WARN_ABOVE
    if chosen["total_gib"] * GIB > USABLE_SHARE * size * 1e9:
        hint = "lower batch_tokens (raise grad_accum to keep the tokens per step)"
        if not checkpointing:
            hint += " or --set gradient_checkpointing=true"
        notes.append(
            f"warning: {cfg.method} needs about {chosen['total_gib']:.1f} GiB, more than a {size} GB GPU "
            f"({examples}) holds; {hint}"
        )
    return notes


def meta_model(config: Any) -> Any:
    """The model built from its config on the meta device: every shape, no memory, no weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return auto.from_config(config)


def _wrap(model: Any, cfg: Any, method_name: str, total_steps: int) -> Any:
    """Apply a method as training does; a 4-bit method's adapters are the same as its 16-bit twin's."""
    from codetune.train.methods import get_method

    method = get_method(method_name)
    wrap = get_method("lora").wrap if method.quantized else method.wrap
    import torch

    # Adapters are created on the meta device too: no memory and no initialisation work.
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = wrap(model, cfg, total_steps)
    # peft moves adapter tensors to the base layer's device as new Parameters; on the meta device
    # that turns AdaLoRA's constant `ranknum` trainable, which it never is on a real device.
    for module in model.modules():
        ranknum = getattr(module, "ranknum", None)
        if ranknum is not None and hasattr(ranknum, "values"):
            for param in ranknum.values():
                param.requires_grad_(False)
    return model


def _dims(config: Any) -> dict[str, Any]:
    """Hidden size, layers, FFN width and vocabulary, whatever the family names them."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(text.hidden_size)
    layers = int(text.num_hidden_layers) + int(getattr(text, "num_decoder_layers", 0) or 0)
    ffn = next(
        (int(v) for k in ("intermediate_size", "n_inner", "d_ff") if (v := getattr(text, k, None))),
        4 * hidden,
    )
    return {"hidden": hidden, "layers": layers, "ffn": ffn, "vocab": int(text.vocab_size)}


def _quantizable(model: Any) -> int:
    """Parameters bitsandbytes would store in 4 bits: linear weights, never the LM head."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            count += module.weight.numel()
    return count


def estimate_memory(
    *,
    method: str,
    quantized: bool,
    total: int,
    trainable: int,
    quantizable: int,
    dims: dict[str, Any],
    micro_batch_tokens: int,
    activation_bytes: int,
    gradient_checkpointing: bool,
) -> dict[str, Any]:
    """Peak training memory on one device, in GiB, split by what holds it.

    - weights: the frozen base in 16 bits (2 bytes), or NF4 for 4-bit methods (0.5 bytes plus about
      0.127 bits of double-quantized scales per weight, bitsandbytes' figure), non-linear layers kept
      in 16 bits; trained parameters are fp32 master copies (4 bytes).
    - gradients: fp32, one per trained parameter. optimizer: AdamW's two fp32 moments.
    - activations: Korthikanti et al. 2022 ("Reducing Activation Recomputation", eq. 1 without the
      attention-score term, which sdpa/flash do not store): 34·h bytes per token and layer in 16 bits
      for a 4·h MLP, written here as (18·h + 4·ffn) so other MLP widths scale; doubled in fp32. With
      gradient checkpointing only each layer's input (2·h bytes) plus one layer's full set. Logits
      add vocab values per token at the activation precision and again in fp32 for the loss.
    """
    frozen = total - trainable
    if method == "full":
        weights = 4 * total
    elif quantized:
        weights = quantizable * (0.5 + 0.127 / 8) + 2 * (frozen - quantizable) + 4 * trainable
    else:
        weights = 2 * frozen + 4 * trainable
    gradients = 4 * trainable
    optimizer = ADAM_BYTES * trainable
    layer_bytes = 18 * dims["hidden"] + 4 * dims["ffn"]  # in 16 bits
    if gradient_checkpointing:
        stored = dims["layers"] * 2 * dims["hidden"] + layer_bytes
    else:
        stored = dims["layers"] * layer_bytes
    activations = micro_batch_tokens * (
        stored * activation_bytes / 2 + dims["vocab"] * (activation_bytes + 4)
    )
    parts = {"weights": weights, "gradients": gradients, "optimizer": optimizer, "activations": activations}
    row: dict[str, Any] = {"method": method, "base_bits": 4 if quantized else 32 if method == "full" else 16}
    row.update({f"{key}_gib": round(value / GIB, 2) for key, value in parts.items()})
    row["total_gib"] = round(sum(parts.values()) / GIB, 2)
    row["trainable_params"] = trainable
    return row


def _dataset_tokens(dataset: Path | None) -> int | None:
    if dataset is None:
        return None
    try:
        return int(read_stats(dataset)["splits"]["train"]["tokens"])
    except (CodetuneError, KeyError, TypeError, ValueError):
        return None


def plan(cfg: Any, *, max_length: int | None = None, num_processes: int = 1) -> dict[str, Any]:
    """Everything `--dry-run` prints for a TrainConfig: parameters, memory per method, tokens per step.

    ``max_length`` is the dataset's longest example (the build stage's ``max_length``), used for
    padded batches; ``num_processes`` multiplies the tokens of an optimizer step.
    """
    from codetune.train.methods import METHODS, get_method, method_names
    from codetune.train.targets import parameter_table, target_modules

    get_method(cfg.method)
    source = resolve_config(cfg.model)
    dims = _dims(source.config)
    context = getattr(source.config, "max_position_embeddings", None) or getattr(
        source.config, "n_positions", None
    )
    seq2seq = bool(getattr(source.config, "is_encoder_decoder", False))
    assumptions: list[str] = []
    if cfg.packing == "packed" and not seq2seq:
        micro_tokens = cfg.batch_tokens
        row_length = cfg.pack_length or cfg.batch_tokens
    else:
        row_length = max_length or cfg.pack_length or context or cfg.batch_tokens
        if max_length is None:
            assumptions.append(f"padded rows assumed {row_length} tokens long (no build max_length given)")
        micro_tokens = cfg.batch_size * row_length
    step_tokens = micro_tokens * cfg.grad_accum * num_processes
    train_tokens = _dataset_tokens(cfg.dataset)
    if cfg.max_steps:
        total_steps = cfg.max_steps
    elif train_tokens is not None:
        total_steps = max(1, math.ceil(cfg.epochs * train_tokens / step_tokens))
    else:
        total_steps = NOMINAL_STEPS
        assumptions.append(f"{NOMINAL_STEPS} optimizer steps assumed (no dataset and no max_steps)")
    activation_bytes = 4 if cfg.precision == "fp32" else 2
    if cfg.precision == "auto":
        assumptions.append("precision auto: bf16 activations assumed (a CUDA GPU)")

    base = meta_model(source.config)
    targets = target_modules(base, cfg.target_modules) if cfg.method != "full" else []
    quantizable = _quantizable(base)
    memory = []
    table: dict[str, Any] = {}
    other_activations = 0.0
    # The configured method first, then the others for comparison.
    for name in [cfg.method, *[m for m in method_names() if m != cfg.method]]:
        model = _wrap(copy.deepcopy(base), cfg, name, total_steps)
        counted = parameter_table(model)
        estimate = functools.partial(
            estimate_memory,
            method=name,
            quantized=METHODS[name].quantized,
            total=counted["total_params"],
            trainable=counted["trainable_params"],
            quantizable=quantizable,
            dims=dims,
            micro_batch_tokens=micro_tokens,
            activation_bytes=activation_bytes,
        )
        memory.append(estimate(gradient_checkpointing=cfg.gradient_checkpointing))
        if name == cfg.method:
            table = counted
            other_activations = estimate(gradient_checkpointing=not cfg.gradient_checkpointing)[
                "activations_gib"
            ]
    return {
        "model": cfg.model,
        "config_source": {"origin": source.origin, "where": source.where},
        "architecture": type(base).__name__,
        "method": cfg.method,
        "target_modules": targets,
        "parameters": table,
        "memory": memory,
        "tokens": {
            "micro_batch": micro_tokens,
            "row_length": row_length,
            "grad_accum": cfg.grad_accum,
            "processes": num_processes,
            "per_optimizer_step": step_tokens,
            "optimizer_steps": total_steps,
        },
        "assumptions": assumptions,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "notes": memory_notes(cfg, memory[0], other_activations),
    }


def render(report: dict[str, Any]) -> str:
    """The plan as text: parameter table, target modules, memory per method, tokens per step."""
    from codetune.train.targets import format_table

    params = report["parameters"]
    source = report["config_source"]
    tokens = report["tokens"]
    lines = [
        f"dry run: {report['model']} ({report['architecture']}), method {report['method']}",
        f"config: {describe_source(report['model'], source['origin'], source['where'])}",
        "",
        format_table(params),
        "",
        f"trainable {params['trainable_params']:,} of {params['total_params']:,} "
        f"({params['trainable_pct']:.4f}%), {params['size_mb']:.2f} MB saved",
        "target modules: " + (", ".join(report["target_modules"]) or "every parameter (full)"),
        "",
        "| method | base | weights GiB | gradients GiB | optimizer GiB | activations GiB | total GiB |",
        "|--|--|--|--|--|--|--|",
    ]
    for row in report["memory"]:
        lines.append(
            f"| {row['method']} | {row['base_bits']}-bit | {row['weights_gib']:.2f} | {row['gradients_gib']:.2f} "
            f"| {row['optimizer_gib']:.2f} | {row['activations_gib']:.2f} | {row['total_gib']:.2f} |"
        )
    lines += report["notes"]
    lines += [
        "",
        f"tokens per optimizer step: {tokens['per_optimizer_step']:,} "
        f"({tokens['micro_batch']:,} per micro-batch x {tokens['grad_accum']} accumulation "
        f"x {tokens['processes']} process(es)); {tokens['optimizer_steps']:,} optimizer steps",
    ]
    lines += [f"assumed: {text}" for text in report["assumptions"]]
    return "\n".join(lines)
