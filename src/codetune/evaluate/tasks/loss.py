"""``loss``: mean loss per token and perplexity on the test split (the dataset's ids and loss mask when
the model shares the dataset's tokenizer, else the rows' text re-tokenized; seq2seq: target tokens).
It scores the model itself: nothing is generated."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks.base import Task, TaskResult


@dataclass
class LossTask(Task):
    rows: list[dict[str, Any]] = field(default_factory=list)  # the test split's rows scored
    dataset_tokenizer: Any = None  # the tokenizer the dataset's ids were made with, when it has one
    max_length: int = 2048

    @property
    def prefix(self) -> str:
        return ""  # loss, perplexity and loss_tokens are named as they are

    @property
    def size(self) -> int:
        return len(self.rows)

    def evaluate(self, run: Any, **sampling: Any) -> TaskResult:
        scores = test_loss(
            run.model, run.tokenizer, self.rows, run.cfg, self.dataset_tokenizer, self.max_length
        )
        return TaskResult(scores)


def build(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> LossTask | None:
    if not rows:
        return None
    dataset_tokenizer = None
    if cfg.dataset is not None:
        from transformers import AutoTokenizer

        from codetune.artifacts.dataset import read_dataset

        folder = read_dataset(cfg.dataset).tokenizer
        if folder is not None:
            dataset_tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    rows = rows[: cfg.loss_examples]
    return LossTask(
        "loss",
        [],
        f"mean loss per token and perplexity over {len(rows)} test rows",
        rows=rows,
        dataset_tokenizer=dataset_tokenizer,
        max_length=int(stats.get("max_length") or 2048),
    )


def test_loss(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    cfg: EvalConfig,
    dataset_tokenizer: Any,
    max_length: int,
) -> dict[str, Any]:
    """Mean loss per token and perplexity on the test split (the dataset's ids and loss mask when the
    model shares the dataset's tokenizer, else the rows' text re-tokenized; seq2seq: target tokens)."""
    import torch

    from codetune.generation.sequence import context_length, is_seq2seq
    from codetune.modeling.logits import target_logits

    if not rows:
        return {}
    same_vocab = dataset_tokenizer is not None and dataset_tokenizer.get_vocab() == tokenizer.get_vocab()
    if is_seq2seq(model):
        return _seq2seq_loss(model, tokenizer, rows, same_vocab, max_length)
    limit = min(max_length, context_length(model) or max_length)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            if same_vocab and "input_ids" in row:
                ids = list(row["input_ids"])[:limit]
                mask = list(row.get("loss_mask") or [1] * len(ids))[: len(ids)]
            else:
                text = row.get("text") or (row.get("prompt", "") + row.get("completion", ""))
                ids = tokenizer(text, add_special_tokens=False)["input_ids"][:limit]
                mask = [1] * len(ids)
            if len(ids) < 2:
                continue
            input_ids = torch.tensor([ids], device=device)
            # The position before each masked-in token predicts it; only those positions are projected.
            keep = torch.tensor([[*map(bool, mask[1:]), False]], device=device)
            if not keep.any():
                continue
            logits = target_logits(model, {"input_ids": input_ids}, keep).float()
            targets = torch.nn.functional.pad(input_ids[:, 1:], (0, 1))[keep]
            total += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            count += int(keep.sum())
    if count == 0:
        return {}
    loss = total / count
    return {"loss": round(loss, 4), "perplexity": round(math.exp(min(loss, 50)), 3), "loss_tokens": count}


def _seq2seq_loss(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], same_vocab: bool, max_length: int
) -> dict[str, float]:
    """Mean loss per target token of an encoder-decoder model (the decoder is fed the labels shifted)."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            if same_vocab and "input_ids" in row and "labels" in row:
                ids, labels = list(row["input_ids"])[:max_length], list(row["labels"])
            else:
                ids = tokenizer(row.get("source", ""), truncation=True, max_length=max_length)["input_ids"]
                labels = tokenizer(row.get("target", ""))["input_ids"]
            if not ids or not labels:
                continue
            out = model(
                input_ids=torch.tensor([ids], device=device), labels=torch.tensor([labels], device=device)
            )
            total += float(out.loss) * len(labels)
            count += len(labels)
    if count == 0:
        return {}
    loss = total / count
    return {"loss": round(loss, 4), "perplexity": round(math.exp(min(loss, 50)), 3), "loss_tokens": count}
