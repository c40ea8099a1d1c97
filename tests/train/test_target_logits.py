"""The LM head runs only where a target token follows, and the losses are those of every position's
logits: the causal loss of a row with a masked prompt, the completion log-probabilities of
preference rows and eval's held-out loss, each checked against the full logits computed here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.helpers.train import CAUSAL_PRESETS, stdlib_chunks

from codetune.modeling.loading import load_model, load_tokenizer
from codetune.modeling.logits import keeps_target_positions
from codetune.train.config import TrainConfig
from codetune.train.methods import get_method
from codetune.train.methods.preference import completion_logps
from codetune.train.packing import IGNORE, collate_packed_rows
from codetune.train.recipe import forward_loss


def head_rows(model):
    """How many positions each call of the model's LM head projected."""
    seen: list[int] = []
    head = model.get_output_embeddings()
    head.register_forward_hook(
        lambda module, args, out: seen.append(args[0].reshape(-1, args[0].shape[-1]).shape[0])
    )
    return seen


def masked_rows(preset: str) -> tuple[list[dict], int]:
    """Three packed rows of real code whose first 30 tokens are a prompt (no loss)."""
    docs = stdlib_chunks(load_tokenizer(preset), 3, 48)
    rows = [{"input_ids": d, "loss_mask": [0] * 30 + [1] * (len(d) - 30)} for d in docs]
    return rows, sum(len(d) for d in docs)


@pytest.mark.parametrize("preset", [*CAUSAL_PRESETS, "tiny-gemma3"])
def test_the_causal_loss_projects_only_target_positions_and_equals_the_full_loss(preset):
    torch.manual_seed(0)
    model = get_method("lora").wrap(load_model(preset), TrainConfig(lora_r=4), total_steps=1).eval()
    assert keeps_target_positions(model)
    rows, tokens = masked_rows(preset)
    batch = collate_packed_rows([rows[:2], rows[2:]], row_tokens=128, pad_id=0)
    seen = head_rows(model)
    loss, count = forward_loss(model, batch, seq2seq=False)
    targets = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE)
    assert seen == [count] and count == int((targets != IGNORE).sum()) < tokens // 2
    loss.backward()  # the gradient reaches the adapter through the gathered positions
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n
    )
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logps = model(**inputs, use_cache=False).logits.float().log_softmax(-1)
        where = targets != IGNORE
        full = -logps[where].gather(-1, targets[where][:, None]).sum()
    torch.testing.assert_close(loss.detach(), full, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("preset", ["tiny-gpt-bigcode", "tiny-gemma3"])
def test_completion_log_probabilities_project_only_completion_positions(preset):
    model = load_model(preset).eval()
    tokenizer = load_tokenizer(preset)
    texts = ["def f(x):\n    return x + 1\n", "import os\nprint(os.getcwd())\n"]
    encoded = [tokenizer(t)["input_ids"] for t in texts]
    width = max(map(len, encoded))
    ids = torch.tensor([e + [0] * (width - len(e)) for e in encoded])
    attention = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded])
    completion = torch.zeros_like(ids)
    completion[0, 5 : len(encoded[0])] = 1
    completion[1, 3 : len(encoded[1])] = 1
    seen = head_rows(model)
    with torch.no_grad():
        logps = completion_logps(model, ids, attention, completion)
        logits = model(input_ids=ids, attention_mask=attention).logits.float().log_softmax(-1)
    assert seen[0] == int(completion[:, 1:].sum())
    for row in range(2):
        picked = [
            logits[row, i - 1, ids[row, i]]
            for i in range(1, width)
            if completion[row, i] and attention[row, i]
        ]
        torch.testing.assert_close(logps[row], torch.stack(picked).sum(), atol=1e-3, rtol=1e-4)


def test_a_model_without_a_position_mask_projects_every_position_with_the_same_loss():
    class Wrapped(torch.nn.Module):
        """A model whose forward has no ``logits_to_keep`` (custom or older code)."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
            return self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=use_cache,
            )

        def get_output_embeddings(self):
            return self.inner.get_output_embeddings()

    inner = load_model("tiny-llama").eval()
    rows, _ = masked_rows("tiny-llama")
    batch = collate_packed_rows([rows], row_tokens=256, pad_id=0)
    wrapped = Wrapped(inner)
    assert not keeps_target_positions(wrapped)
    seen = head_rows(wrapped)
    with torch.no_grad():
        plain, n_plain = forward_loss(wrapped, batch, seq2seq=False)
        kept, n_kept = forward_loss(inner, batch, seq2seq=False)
    assert seen == [batch["input_ids"].numel(), n_kept] and n_plain == n_kept
    torch.testing.assert_close(plain, kept, atol=1e-3, rtol=1e-4)


def test_eval_loss_projects_only_masked_in_positions_and_equals_the_full_loss():
    from types import SimpleNamespace

    from codetune.evaluate.tasks.loss import test_loss as eval_loss

    model = load_model("tiny-gemma3").eval()
    tokenizer = load_tokenizer("tiny-gemma3")
    rows, _ = masked_rows("tiny-gemma3")
    rows.append({"input_ids": rows[0]["input_ids"][:20], "loss_mask": [0] * 20})  # nothing to score
    seen = head_rows(model)
    found = eval_loss(model, tokenizer, rows, SimpleNamespace(), tokenizer, max_length=512)
    projected = list(seen)
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows[:3]:
            ids = torch.tensor([row["input_ids"]])
            logps = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            picked = logps.gather(-1, ids[0, 1:, None])[:, 0]
            weights = torch.tensor(row["loss_mask"][1:], dtype=torch.float32)
            total, count = total - float((picked * weights).sum()), count + int(weights.sum())
    # one call per scored row (the row with nothing to score runs nothing), its targets' rows only
    assert projected == [len(row["input_ids"]) - 30 for row in rows[:3]]
    assert found["loss_tokens"] == count == sum(projected)
    assert found["loss"] == pytest.approx(round(total / count, 4), abs=2e-4)
