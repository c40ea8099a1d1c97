"""AdaLoRA: ranks pruned from init_r towards target_r by importance, on the run's real schedule.

Its hooks: the orthogonality penalty (peft adds it only when the model computes the loss itself,
which the recipe does not), the budget allocation after every optimizer step, the allocator's
importance averages in checkpoints, and the final ranks in the summary and adalora_ranks.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codetune.artifacts.run import write_adalora_ranks
from codetune.errors import ConfigError
from codetune.train.methods import Method, new_token_modules, register_method, task_type
from codetune.train.targets import target_modules

ALLOCATOR_STATE = ("ipt", "exp_avg_ipt", "exp_avg_unc")


@register_method("adalora")
class AdaLora(Method):
    def wrap(self, model: Any, cfg: Any, total_steps: int, new_tokens: Sequence[int] = ()) -> Any:
        from peft import AdaLoraConfig, get_peft_model

        tinit = int(cfg.adalora_tinit * total_steps)
        tfinal = int(cfg.adalora_tfinal * total_steps)
        if total_steps - tinit - tfinal < 1:
            raise ConfigError(
                f"adalora needs more steps: {total_steps} leave no room between tinit and tfinal"
            )
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
            task_type=task_type(model),
            **new_token_modules(model, new_tokens),
        )
        return get_peft_model(model, config)

    def extra_loss(self, model: Any) -> Any:
        return model.peft_config["default"].orth_reg_weight * orthogonality_penalty(model)

    def after_step(self, model: Any, step: int) -> None:
        model.base_model.update_and_allocate(step)

    def summary(self, model: Any, run: Path | None) -> dict[str, Any]:
        final = ranks(model)
        if run is not None:
            write_adalora_ranks(run, final)
        return {
            "adalora_rank_mean": round(sum(final.values()) / max(len(final), 1), 2),
            "adalora_rank_min": min(final.values(), default=0),
            "adalora_rank_max": max(final.values(), default=0),
        }

    def checkpoint_state(self, model: Any) -> dict[str, Any]:
        allocator = model.base_model.rankallocator
        return {key: getattr(allocator, key) for key in ALLOCATOR_STATE}

    def restore_state(self, model: Any, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(model.base_model.rankallocator, key, value)


def ranks(model: Any) -> dict[str, int]:
    """Current rank of every AdaLoRA module (non-zero entries of its singular-value vector)."""
    found = {}
    for name, param in model.named_parameters():
        if "lora_E" in name:
            module = name.split(".lora_E")[0].removeprefix("base_model.model.")
            found[module] = int((param.detach() != 0).sum())
    return found


def orthogonality_penalty(model: Any) -> Any:
    """AdaLoRA's penalty ||PP^T - I|| + ||Q^TQ - I||, averaged over the adapted matrices."""
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
