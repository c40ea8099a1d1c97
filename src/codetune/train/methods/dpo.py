"""DPO (Rafailov et al. 2023, arXiv 2305.18290, eq. 7): for a prompt x with a chosen completion y_w
and a rejected one y_l,

    loss = -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))])

with log-probabilities summed over the completion tokens, ref the base model (the adapter off), as
TRL's DPOTrainer computes it (loss_type "sigmoid"). Rows: the ``dpo`` pairs of a feedback dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from codetune.train.methods import register_method
from codetune.train.methods.preference import Preference, completion_logps, pad, reference


def dpo_losses(
    policy_chosen: Any, policy_rejected: Any, ref_chosen: Any, ref_rejected: Any, beta: float
) -> Any:
    """The loss of each pair, from summed completion log-probabilities."""
    import torch.nn.functional as F

    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin)


@register_method("dpo")
class Dpo(Preference):
    objective = "dpo"
    columns = ("rejected_input_ids", "rejected_loss_mask")

    def collate(self, rows: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Any]:
        """The chosen rows, then the rejected rows, in one padded batch."""
        sequences = [r["input_ids"] for r in rows] + [r["rejected_input_ids"] for r in rows]
        masks = [r["loss_mask"] for r in rows] + [r["rejected_loss_mask"] for r in rows]
        return pad(sequences, masks, pad_id)

    def units(self, batch: dict[str, Any]) -> int:
        return batch["input_ids"].shape[0] // 2

    def loss(self, model: Any, batch: dict[str, Any], cfg: Any) -> tuple[Any, int]:
        inputs = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        with reference(model):
            ref_chosen, ref_rejected = completion_logps(model, *inputs).chunk(2)
        chosen, rejected = completion_logps(model, *inputs).chunk(2)
        losses = dpo_losses(chosen, rejected, ref_chosen, ref_rejected, cfg.preference_beta)
        return losses.sum(), len(losses)
