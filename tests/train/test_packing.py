"""Packing: a document's logits are the same packed with others as alone, for every causal preset."""

from __future__ import annotations

import pytest
import torch
from tests.helpers.train import CAUSAL_PRESETS, stdlib_chunks

from codetune.modeling.loading import load_model, load_tokenizer
from codetune.train.packing import IGNORE, collate_packed, collate_packed_rows, collate_padded, plan_packed


@pytest.mark.parametrize("preset", CAUSAL_PRESETS)
def test_packed_document_logits_equal_alone(preset: str) -> None:
    model = load_model(preset)
    docs = stdlib_chunks(load_tokenizer(preset), 3, 40)
    rows = [{"input_ids": d, "loss_mask": [1] * len(d)} for d in docs]
    packed = collate_packed(rows, batch_tokens=512)
    assert packed["position_ids"][0, len(docs[0])] == 0  # positions restart per document
    with torch.no_grad():
        together = model(
            input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
        ).logits
        start = 0
        for doc in docs:
            alone = model(input_ids=torch.tensor([doc]), use_cache=False).logits
            part = together[:, start : start + len(doc)]
            torch.testing.assert_close(part, alone, atol=1e-4, rtol=1e-4)
            start += len(doc)
        # Without restarting positions the later documents do see the earlier ones: the test can fail.
        plain = model(input_ids=packed["input_ids"], use_cache=False).logits
        assert (plain[:, len(docs[0]) :] - together[:, len(docs[0]) :]).abs().max() > 1e-3

        # Several packed rows, the shorter one ending in a padding segment: same logits again.
        two = collate_packed_rows([rows[:2], rows[2:]], row_tokens=512, pad_id=0)
        rows_logits = model(
            input_ids=two["input_ids"], position_ids=two["position_ids"], use_cache=False
        ).logits
        alone = [model(input_ids=torch.tensor([doc]), use_cache=False).logits[0] for doc in docs]
        torch.testing.assert_close(rows_logits[0, : len(docs[0])], alone[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            rows_logits[0, len(docs[0]) : len(docs[0]) + len(docs[1])], alone[1], atol=1e-4, rtol=1e-4
        )
        torch.testing.assert_close(rows_logits[1, : len(docs[2])], alone[2], atol=1e-4, rtol=1e-4)


def test_packed_labels_never_cross_documents_and_padding_never_counts() -> None:
    rows = [{"input_ids": [5, 6, 7], "loss_mask": [0, 1, 1]}, {"input_ids": [8, 9], "loss_mask": [1, 1]}]
    packed = collate_packed(rows, batch_tokens=16)
    assert packed["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    padded = collate_padded(rows, pad_id=0)
    assert padded["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, 9, IGNORE]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


def test_plan_packed_fills_the_budget_and_keeps_every_document() -> None:
    lengths = [30, 70, 50, 20, 90, 10, 60]
    plan = plan_packed(lengths, batch_tokens=100, seed=0)
    assert sorted(i for batch in plan for i in batch) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in batch) <= 100 for batch in plan)
    assert len(plan) <= 4  # 330 tokens in 100-token bins
    assert plan == plan_packed(lengths, batch_tokens=100, seed=0)  # deterministic: resume replays it


def test_packed_rows_fill_with_an_isolated_padding_segment() -> None:
    from codetune.train.packing import Batches

    rows = [{"input_ids": list(range(10, 10 + n)), "loss_mask": [1] * n} for n in (5, 4, 3, 6, 2)]
    batches = Batches(
        rows, kind="causal", mode="packed", batch_tokens=16, batch_size=1, pad_id=0, seed=0, pack_length=8
    )
    plan = batches.plan(0)
    assert all(len(micro) <= 2 for micro in plan)  # 16 // 8 rows per micro-batch
    assert sorted(i for micro in plan for row in micro for i in row) == list(range(5))
    batch = batches.collate(plan[0])
    assert batch["input_ids"].shape[1] <= 8
    for ids, pos, labels in zip(batch["input_ids"], batch["position_ids"], batch["labels"], strict=True):
        pad = ids == 0
        assert (labels[pad] == IGNORE).all()
        if pad.any():  # the padding starts its own segment at position 0
            assert pos[pad][0] == 0


def test_packing_isolation_with_eager_attention_and_the_flatten_rule() -> None:
    from codetune.train.recipe import forward_loss

    model = load_model("tiny-llama")
    model.set_attn_implementation("eager")
    docs = stdlib_chunks(load_tokenizer("tiny-llama"), 3, 40)
    rows = [{"input_ids": d, "loss_mask": [1] * len(d)} for d in docs]
    two = collate_packed_rows([rows[:2], rows[2:]], row_tokens=512, pad_id=0)
    with torch.no_grad():
        packed, n_packed = forward_loss(model, two, seq2seq=False)
        alone = [forward_loss(model, collate_packed([row], 512), seq2seq=False) for row in rows]
    # The summed loss over the packed rows is the sum of each document's loss alone.
    assert n_packed == sum(n for _, n in alone)
    torch.testing.assert_close(packed, sum(loss for loss, _ in alone), atol=1e-3, rtol=1e-4)
    # Flattening rows into one (what the flash-attention path does) gives the same ids and positions.
    flat = {k: v.reshape(1, -1) for k, v in two.items()}
    with torch.no_grad():
        flat_loss, n_flat = forward_loss(model, flat, seq2seq=False)
    assert n_flat == n_packed
    torch.testing.assert_close(flat_loss, packed, atol=1e-3, rtol=1e-4)
