"""KTO (Ethayarajh et al. 2024, arXiv 2402.01306, eq. 7-8): each completion is desirable (accepted)
or undesirable (rejected), no pairs needed. With r = log pi(y|x) - log ref(y|x) (summed over the
completion) and the reference point z0 = KL(pi || ref), estimated as TRL's KTOTrainer does on
mismatched pairs of the batch (each prompt with the previous row's completion), averaged over the
batch and every process, detached and clamped at 0:

    desirable:   loss = lambda_D * (1 - sigmoid(beta * (r - z0)))
    undesirable: loss = lambda_U * (1 - sigmoid(beta * (z0 - r)))

Rows: the ``kto`` rows of a feedback dataset (``label`` 1 accepted, 0 rejected).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from codetune.errors import ConfigError
from codetune.train.methods import register_method
from codetune.train.methods.preference import (
    Preference,
    completion_logps,
    mean_over_processes,
    pad,
    reference,
)


def kto_losses(
    policy: Any,
    ref: Any,
    labels: Any,
    kl_policy: Any,
    kl_ref: Any,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> Any:
    """The loss of each row, from summed completion log-probabilities of the rows and of the
    mismatched (KL) rows."""
    import torch

    kl = mean_over_processes((kl_policy - kl_ref).mean().detach()).clamp(min=0)
    ratio = policy - ref
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (ratio - kl)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratio)))
    return torch.where(labels.bool(), desirable, undesirable)


def mismatched(rows: Sequence[dict[str, Any]]) -> tuple[list[list[int]], list[list[int]]]:
    """Each row's prompt with the previous row's completion (the first takes the last's), as TRL
    builds its KL rows; cut to the longest row of the batch."""
    starts = [list(r["loss_mask"]).index(1) if 1 in r["loss_mask"] else len(r["loss_mask"]) for r in rows]
    width = max(len(r["input_ids"]) for r in rows)
    sequences, masks = [], []
    for i, row in enumerate(rows):
        j = i - 1  # -1: the last row
        prompt = list(row["input_ids"][: starts[i]])
        completion = list(rows[j]["input_ids"][starts[j] :])
        sequences.append((prompt + completion)[:width])
        masks.append(([0] * len(prompt) + [1] * len(completion))[:width])
    return sequences, masks


@register_method("kto")
class Kto(Preference):
    objective = "kto"
    columns = ("label",)

    def check(self, cfg: Any) -> None:
        super().check(cfg)
        if cfg.batch_size < 2:
            raise ConfigError(
                "--method kto estimates its reference point from the other rows of a micro-batch: "
                "set batch_size to 2 or more"
            )

    def collate(self, rows: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Any]:
        import torch

        batch = pad([r["input_ids"] for r in rows], [r["loss_mask"] for r in rows], pad_id)
        kl = pad(*mismatched(rows), pad_id)
        batch |= {f"kl_{key}": value for key, value in kl.items()}
        batch["label"] = torch.tensor([int(r["label"]) for r in rows])
        return batch

    def units(self, batch: dict[str, Any]) -> int:
        return batch["label"].shape[0]

    def loss(self, model: Any, batch: dict[str, Any], cfg: Any) -> tuple[Any, int]:
        import torch

        inputs = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        kl_inputs = (batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_completion_mask"])
        with reference(model):
            ref = completion_logps(model, *inputs)
            kl_ref = completion_logps(model, *kl_inputs)
        with torch.no_grad():
            kl_policy = completion_logps(model, *kl_inputs)
        policy = completion_logps(model, *inputs)
        losses = kto_losses(
            policy,
            ref,
            batch["label"],
            kl_policy,
            kl_ref,
            cfg.preference_beta,
            cfg.kto_desirable_weight,
            cfg.kto_undesirable_weight,
        )
        return losses.sum(), len(losses)
