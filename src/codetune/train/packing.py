"""Batches for training: documents packed to a token budget, or padded (for comparison and seq2seq).

Packed batches are one row (or, with ``pack_length``, several rows) of concatenated documents with ``position_ids`` restarting at 0 for
each document and no attention mask. transformers (5.x) reads document boundaries from such
position ids: with sdpa/eager attention ``create_causal_mask`` builds a block-diagonal causal
mask, with flash-attention it calls the varlen kernel. Either way no token attends across
documents, and the first token of each document is never a target of the previous one. Every
preset architecture (GPTBigCode, Starcoder2, Phi, CodeGen, Llama) goes through
``create_causal_mask``; tests/train/test_packing.py checks isolation for each of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

IGNORE = -100


def labels_for(row: dict[str, Any], completion_only: bool = True) -> list[int]:
    """Target ids of one example: the token where it counts in the loss, else -100."""
    ids = list(row["input_ids"])
    if "labels" in row and "loss_mask" not in row:
        return list(row["labels"])
    mask = row.get("loss_mask") if completion_only else None
    if mask is None:
        return ids
    return [tok if keep else IGNORE for tok, keep in zip(ids, mask, strict=True)]


def plan_packed(lengths: Sequence[int], batch_tokens: int, seed: int, epoch: int = 0) -> list[list[int]]:
    """Fill micro-batches up to ``batch_tokens``, first fit decreasing: longest documents first (ties
    in a shuffled order), each into the first bin with room. Decreasing order leaves far less of each
    bin empty than arrival order (the padding a packed row ends with is compute spent on nothing);
    the bins themselves are then shuffled, so batch order stays random."""
    order = list(range(len(lengths)))
    random.Random(seed * 1000 + epoch).shuffle(order)
    order.sort(key=lambda index: -min(lengths[index], batch_tokens))
    bins: list[list[int]] = []
    room: list[int] = []
    for index in order:
        size = min(lengths[index], batch_tokens)
        for b, free in enumerate(room):
            if size <= free:
                bins[b].append(index)
                room[b] -= size
                break
        else:
            bins.append([index])
            room.append(batch_tokens - size)
    random.Random(seed * 1000 + epoch + 1).shuffle(bins)
    return bins


def plan_padded(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int = 0, *, sort: bool = False
) -> list[list[int]]:
    """Micro-batches of ``batch_size`` examples (``sort``: similar lengths together, less padding)."""
    order = list(range(len(lengths)))
    random.Random(seed * 1000 + epoch).shuffle(order)
    if sort:
        order.sort(key=lambda i: lengths[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    random.Random(seed * 1000 + epoch + 1).shuffle(batches)
    return batches


def collate_packed(rows: Sequence[dict[str, Any]], batch_tokens: int, completion_only: bool = True) -> dict:
    """One row of concatenated documents: input_ids, position_ids restarting per document, labels."""
    import torch

    ids: list[int] = []
    positions: list[int] = []
    labels: list[int] = []
    for row in rows:
        doc_ids = list(row["input_ids"])[:batch_tokens]
        doc_labels = labels_for(row, completion_only)[:batch_tokens]
        # The first token has nothing before it in its own document: never a target.
        doc_labels[0] = IGNORE
        ids += doc_ids
        positions += list(range(len(doc_ids)))
        labels += doc_labels
    return {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([positions]),
        "labels": torch.tensor([labels]),
    }


def collate_packed_rows(
    rows_of_docs: Sequence[Sequence[dict[str, Any]]],
    row_tokens: int,
    pad_id: int,
    completion_only: bool = True,
) -> dict:
    """Several packed rows, the shorter ones filled with a padding segment of its own (never attended)."""
    import torch

    rows = [collate_packed(docs, row_tokens, completion_only) for docs in rows_of_docs]
    width = max(row["input_ids"].shape[1] for row in rows)
    out: dict[str, list] = {"input_ids": [], "position_ids": [], "labels": []}
    for row in rows:
        gap = width - row["input_ids"].shape[1]
        # The padding's positions restart at 0: transformers sees it as one more document, at the end.
        fill = {"input_ids": [pad_id] * gap, "position_ids": list(range(gap)), "labels": [IGNORE] * gap}
        for key in out:
            out[key].append(row[key][0].tolist() + fill[key])
    return {key: torch.tensor(value) for key, value in out.items()}


def collate_padded(rows: Sequence[dict[str, Any]], pad_id: int, completion_only: bool = True) -> dict:
    """Right-padded causal batch: attention_mask 0 and labels -100 on padding."""
    import torch

    width = max(len(row["input_ids"]) for row in rows)
    ids, mask, labels = [], [], []
    for row in rows:
        n = len(row["input_ids"])
        ids.append(list(row["input_ids"]) + [pad_id] * (width - n))
        mask.append([1] * n + [0] * (width - n))
        row_labels = labels_for(row, completion_only)
        row_labels[0] = IGNORE
        labels.append(row_labels + [IGNORE] * (width - n))
    return {
        "input_ids": torch.tensor(ids),
        "attention_mask": torch.tensor(mask),
        "labels": torch.tensor(labels),
    }


def collate_seq2seq(rows: Sequence[dict[str, Any]], pad_id: int) -> dict:
    """Encoder inputs padded with an attention mask; decoder labels padded with -100."""
    import torch

    width = max(len(row["input_ids"]) for row in rows)
    target_width = max(len(row["labels"]) for row in rows)
    ids, mask, labels = [], [], []
    for row in rows:
        n, m = len(row["input_ids"]), len(row["labels"])
        ids.append(list(row["input_ids"]) + [pad_id] * (width - n))
        mask.append([1] * n + [0] * (width - n))
        labels.append(list(row["labels"]) + [IGNORE] * (target_width - m))
    return {
        "input_ids": torch.tensor(ids),
        "attention_mask": torch.tensor(mask),
        "labels": torch.tensor(labels),
    }


class Batches:
    """The micro-batches of one split for one epoch, in a fixed order (so a resumed run skips exactly)."""

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        *,
        kind: str,
        mode: str,
        batch_tokens: int,
        batch_size: int,
        pad_id: int,
        seed: int,
        completion_only: bool = True,
        pack_length: int | None = None,
        collate: Callable[[Sequence[dict[str, Any]], int], dict] | None = None,
    ) -> None:
        self.rows = rows
        self.kind = kind
        # A method's own collate (preference pairs) takes batch_size rows, like pad mode.
        self.custom_collate = collate
        self.mode = "pad" if kind == "seq2seq" or collate is not None else mode
        self.batch_tokens = batch_tokens
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.seed = seed
        self.completion_only = completion_only
        self.pack_length = pack_length if pack_length and pack_length < batch_tokens else None
        self.lengths = [len(row["input_ids"]) for row in rows]

    def plan(self, epoch: int) -> list[list[Any]]:
        """Indices of the examples in each micro-batch of ``epoch`` (lists of rows with pack_length)."""
        if self.mode == "packed" and self.pack_length:
            rows = plan_packed(self.lengths, self.pack_length, self.seed, epoch)
            per_batch = self.batch_tokens // self.pack_length
            return [rows[i : i + per_batch] for i in range(0, len(rows), per_batch)]
        if self.mode == "packed":
            return plan_packed(self.lengths, self.batch_tokens, self.seed, epoch)
        return plan_padded(self.lengths, self.batch_size, self.seed, epoch, sort=self.kind == "seq2seq")

    def tokens(self, indices: Sequence[Any]) -> int:
        """Real (non-pad) input tokens of one micro-batch."""
        flat = [i for row in indices for i in row] if indices and isinstance(indices[0], list) else indices
        if self.mode != "packed":
            return sum(self.lengths[i] for i in flat)
        cap = self.pack_length or self.batch_tokens  # packing truncates longer documents to a row
        return sum(min(self.lengths[i], cap) for i in flat)

    def collate(self, indices: Sequence[Any]) -> dict:
        """Tensors for one micro-batch."""
        if self.custom_collate is not None:
            return self.custom_collate([self.rows[i] for i in indices], self.pad_id)
        if self.mode == "packed" and self.pack_length and self.kind != "seq2seq":
            docs = [[self.rows[i] for i in row] for row in indices]
            return collate_packed_rows(docs, self.pack_length, self.pad_id, self.completion_only)
        rows = [self.rows[i] for i in indices]
        if self.kind == "seq2seq":
            return collate_seq2seq(rows, self.pad_id)
        if self.mode == "packed":
            return collate_packed(rows, self.batch_tokens, self.completion_only)
        return collate_padded(rows, self.pad_id, self.completion_only)
