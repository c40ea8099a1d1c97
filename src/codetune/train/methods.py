"""Fine-tuning methods: one small function per method that turns a loaded base into a trainable model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from codetune.errors import ConfigError
from codetune.train.targets import target_modules


@dataclass(frozen=True)
class Method:
    """How a method wraps the base model; ``quantized`` methods load the base in 4 bits (CUDA only)."""

    name: str
    wrap: Callable[[Any, Any, int], Any]
    peft: bool = True
    quantized: bool = False


METHODS: dict[str, Method] = {}


def register_method(name: str, *, peft: bool = True, quantized: bool = False) -> Callable:
    """Register ``wrap(model, cfg, total_steps) -> model`` under ``name``."""

    def decorator(wrap: Callable[[Any, Any, int], Any]) -> Callable[[Any, Any, int], Any]:
        METHODS[name] = Method(name, wrap, peft=peft, quantized=quantized)
        return wrap

    return decorator


def get_method(name: str) -> Method:
    """The registered method, or a one-line error listing the known ones."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def _task_type(model: Any) -> str:
    return "SEQ_2_SEQ_LM" if getattr(model.config, "is_encoder_decoder", False) else "CAUSAL_LM"


@register_method("full", peft=False)
def full(model: Any, cfg: Any, total_steps: int) -> Any:
    """Every weight trains."""
    model.requires_grad_(True)
    return model


@register_method("lora")
def lora(model: Any, cfg: Any, total_steps: int) -> Any:
    """Low-rank adapters on every linear layer but the LM head."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target_modules(model, cfg.target_modules),
        task_type=_task_type(model),
    )
    return get_peft_model(model, config)


@register_method("adalora")
def adalora(model: Any, cfg: Any, total_steps: int) -> Any:
    """AdaLoRA: ranks pruned from init_r towards target_r by importance, on the run's real schedule."""
    from peft import AdaLoraConfig, get_peft_model

    tinit = int(cfg.adalora_tinit * total_steps)
    tfinal = int(cfg.adalora_tfinal * total_steps)
    if total_steps - tinit - tfinal < 1:
        raise ConfigError(f"adalora needs more steps: {total_steps} leave no room between tinit and tfinal")
    config = AdaLoraConfig(
        init_r=cfg.adalora_init_r,
        target_r=cfg.adalora_target_r,
        tinit=tinit,
        tfinal=tfinal,
        deltaT=cfg.adalora_delta_t,
        total_step=total_steps,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target_modules(model, cfg.target_modules),
        task_type=_task_type(model),
    )
    return get_peft_model(model, config)


@register_method("qlora", quantized=True)
def qlora(model: Any, cfg: Any, total_steps: int) -> Any:
    """LoRA over a 4-bit NF4 base (loaded quantized by the recipe)."""
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    return lora(model, cfg, total_steps)


def quantization_config() -> Any:
    """bitsandbytes NF4 with double quantization and bf16 compute (CUDA only)."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "qlora needs a CUDA GPU (bitsandbytes 4-bit); on this machine use --method lora "
            "(bitsandbytes on CPU gives wrong gradients after an eval pass)"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("qlora needs bitsandbytes: pip install 'codetune[gpu]'") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def adalora_ranks(model: Any) -> dict[str, int]:
    """Current rank of every AdaLoRA module (non-zero entries of its singular-value vector)."""
    ranks = {}
    for name, param in model.named_parameters():
        if "lora_E" in name:
            module = name.split(".lora_E")[0].removeprefix("base_model.model.")
            ranks[module] = int((param.detach() != 0).sum())
    return ranks


def adalora_orth_reg(model: Any) -> Any:
    """AdaLoRA's orthogonality penalty on P and Q (peft adds it only when the model computes the loss)."""
    import torch

    total = 0.0
    count = 0
    for name, param in model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and param.requires_grad:
            cov = param @ param.T if "lora_A" in name else param.T @ param
            eye = torch.eye(*cov.shape, device=cov.device, dtype=cov.dtype)
            total = total + torch.norm(cov - eye, p="fro")
            count += 1
    return total / max(count, 1)
