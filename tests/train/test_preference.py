"""--method dpo and --method kto: the losses against TRL's trainers on the same batch and against
values worked out by hand, the reference as the adapter switched off, and training end to end."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from codetune.errors import ConfigError, InputError
from codetune.train.config import TrainConfig
from codetune.train.methods import get_method
from codetune.train.methods.dpo import dpo_losses
from codetune.train.methods.kto import kto_losses, mismatched
from codetune.train.methods.preference import completion_logps, reference
from codetune.train.recipe import check_inputs, train

PROMPTS = ["def f(x):\n    return", "import os\n", "x = [", "for i in"]
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn", "c_proj"]}
SETTINGS = SimpleNamespace(preference_beta=0.3, kto_desirable_weight=1.0, kto_undesirable_weight=1.5)


def perturbed(model):
    """LoRA starts as the identity (B = 0): move it so the policy and the reference differ."""
    generator = torch.Generator().manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.3, generator=generator)
    return model.eval()


@pytest.fixture
def trl(tmp_path):
    """TRL's trainers set up accelerate's process-wide state (TRL's own precision): reset it after,
    so later runs in this process build their Accelerator from scratch."""
    trl = pytest.importorskip("trl")
    yield trl
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def tokenizer():
    from codetune.modeling.loading import load_tokenizer

    tok = load_tokenizer("tiny-gpt-bigcode")
    tok.pad_token = tok.pad_token or tok.eos_token
    return tok


def trl_batch(trainer_class, config, columns, tokenizer):
    """A TRL trainer of ``config`` on PROMPTS + ``columns`` (a new LoRA adapter, moved off the
    identity) and its collated batch of all four rows."""
    from datasets import Dataset
    from peft import LoraConfig

    from codetune.modeling.loading import load_model

    trainer = trainer_class(
        model=load_model("tiny-gpt-bigcode"),
        args=config,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS, **columns}),
        processing_class=tokenizer,
        peft_config=LoraConfig(**LORA),
    )
    model = perturbed(trainer.model)
    return trainer, model, trainer.data_collator([trainer.train_dataset[i] for i in range(4)])


def test_dpo_loss_matches_trl_on_the_same_batch(trl, tokenizer, tmp_path):
    config = trl.DPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[], use_cpu=True, beta=0.3
    )
    columns = {
        "chosen": [" x + 1\n", "import sys\n", "1, 2]\n", " range(3):\n"],
        "rejected": [" None\n", "print(1)\n", "]\n", " x:\n"],
    }
    trainer, model, batch = trl_batch(trl.DPOTrainer, config, columns, tokenizer)
    theirs = float(trainer._compute_loss(model, batch, False).detach())
    total, pairs = get_method("dpo").loss(model, batch, SETTINGS)
    assert pairs == 4 and theirs > math.log(2) + 0.01  # the perturbation made it non-trivial
    assert float(total.detach() / pairs) == pytest.approx(theirs, abs=1e-5)


def test_kto_loss_and_its_kl_rows_match_trl_on_the_same_batch(trl, tokenizer, tmp_path):
    config = trl.KTOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        beta=0.3,
        desirable_weight=1.0,
        undesirable_weight=1.5,
    )
    columns = {
        "completion": [" x + 1\n", "import sys\n", "]\n", " x:\n"],
        "label": [True, True, False, False],
    }
    trainer, model, batch = trl_batch(trl.KTOTrainer, config, columns, tokenizer)
    # Our KL rows, built from the rows alone, are TRL's: each prompt with the previous row's completion.
    rows = [
        {"input_ids": ids[keep == 1].tolist(), "loss_mask": mask[keep == 1].tolist()}
        for ids, mask, keep in zip(batch["input_ids"], batch["completion_mask"], batch["attention_mask"])
    ]
    sequences, masks = mismatched(rows)
    for i, (ids, keep) in enumerate(zip(batch["KL_input_ids"], batch["KL_attention_mask"])):
        assert sequences[i] == ids[keep == 1].tolist()
        assert masks[i] == batch["KL_completion_mask"][i][keep == 1].tolist()
    theirs = float(trainer._compute_loss(model, batch, False).detach())
    ours = {key.replace("KL_", "kl_"): value for key, value in batch.items()}
    total, count = get_method("kto").loss(model, ours, SETTINGS)
    assert count == 4 and abs(theirs - 0.5) > 0.01
    assert float(total.detach() / count) == pytest.approx(theirs, abs=1e-5)


def test_losses_by_hand():
    # DPO: margin = (-3 - -4) - (-5 - -4.5) = 1.5; loss = log(1 + exp(-beta * 1.5)).
    loss = dpo_losses(
        torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5]), 0.5
    )
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-0.75)))
    # KTO: z0 = mean(-4 - -4.2, -4.4 - -4.4) = 0.1; r = (1, -1).
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    losses = kto_losses(
        torch.tensor([-2.0, -6.0]),
        torch.tensor([-3.0, -5.0]),
        torch.tensor([1, 0]),
        torch.tensor([-4.0, -4.4]),
        torch.tensor([-4.2, -4.4]),
        beta=0.5,
        desirable_weight=2.0,
        undesirable_weight=3.0,
    )
    assert losses.tolist() == pytest.approx([2 * (1 - sig(0.5 * 0.9)), 3 * (1 - sig(0.5 * 1.1))])
    # A negative KL estimate is clamped to 0 (the reference point is never below the reference).
    clamped = kto_losses(
        torch.tensor([-2.0]),
        torch.tensor([-3.0]),
        torch.tensor([1]),
        torch.tensor([-5.0]),
        torch.tensor([-4.0]),
        beta=0.5,
    )
    assert float(clamped) == pytest.approx(1 - sig(0.5))


def test_mismatched_rows_by_hand():
    rows = [
        {"input_ids": [1, 2, 3, 4], "loss_mask": [0, 0, 1, 1]},
        {"input_ids": [5, 6, 7], "loss_mask": [0, 1, 1]},
        {"input_ids": [8, 9], "loss_mask": [0, 1]},
    ]
    sequences, masks = mismatched(rows)
    assert sequences == [[1, 2, 9], [5, 3, 4], [8, 6, 7]]
    assert masks == [[0, 0, 1], [0, 1, 1], [0, 1, 1]]


def test_the_reference_is_the_base_model_with_the_adapter_off(tokenizer):
    from codetune.modeling.loading import load_model

    cfg = TrainConfig(method="dpo", lora_r=4)
    model = perturbed(get_method("dpo").wrap(load_model("tiny-gpt-bigcode"), cfg, total_steps=10))
    ids = torch.tensor([tokenizer("def f(x):\n    return x + 1\n")["input_ids"]])
    mask = torch.ones_like(ids)
    completion = torch.zeros_like(ids)
    completion[:, 6:] = 1
    before = sum(p.numel() for p in model.parameters())
    with reference(model):
        ref = completion_logps(model, ids, mask, completion)
    base = completion_logps(load_model("tiny-gpt-bigcode").eval(), ids, mask, completion)
    policy = completion_logps(model, ids, mask, completion)
    assert torch.allclose(ref, base, atol=1e-5) and not torch.allclose(policy, base, atol=1e-3)
    assert sum(p.numel() for p in model.parameters()) == before  # no second copy of the weights


@pytest.fixture(scope="module")
def feedback_dataset(tmp_path_factory):
    from tests.helpers.feedback import typed_on, write

    from codetune.dataset.builder import build
    from codetune.dataset.config import BuildConfig

    root = tmp_path_factory.mktemp("feedback")
    rows = typed_on(24, files=6)
    build(
        BuildConfig(
            corpus=write(root / "records", rows),
            format="feedback",
            out=root / "ds",
            max_length=128,
            valid_fraction=0.2,
            test_fraction=0,
        )
    )
    return root / "ds"


@pytest.mark.parametrize(("method", "untrained"), [("dpo", math.log(2)), ("kto", 0.5)])
def test_train_end_to_end(feedback_dataset, tmp_path, method, untrained):
    """A few steps on a tiny preset: the untrained adapter scores exactly the formula's starting value
    (policy = reference), and the valid loss then falls below it: the policy prefers the accepted
    completions of held-out prompts more than the base does."""
    from codetune.artifacts.run import read_metrics, read_run

    cfg = TrainConfig(
        model="tiny-gpt-bigcode",
        dataset=feedback_dataset,
        method=method,
        out=tmp_path / "run",
        max_steps=4,
        batch_size=4,
        lr=2e-3,
        eval_every=4,
    )
    result = train(cfg)
    evals = [row["eval_loss"] for row in read_metrics(tmp_path / "run") if "eval_loss" in row]
    assert evals[0] == pytest.approx(untrained, abs=1e-6)
    assert evals[-1] < untrained - 0.02
    assert read_run(tmp_path / "run").adapter is not None and result.summary["steps"] == 4


def test_methods_refuse_datasets_and_settings_they_cannot_use(feedback_dataset, causal_dataset, tmp_path):
    with pytest.raises(InputError, match="build one from editor records"):
        check_inputs(TrainConfig(method="kto", dataset=causal_dataset, out=tmp_path / "a"))
    with pytest.raises(ConfigError, match="batch_size to 2"):
        check_inputs(TrainConfig(method="kto", dataset=feedback_dataset, batch_size=1, out=tmp_path / "b"))
    # Plain LoRA on a feedback dataset learns the accepted completions only (its sft rows).
    setup = check_inputs(TrainConfig(method="lora", dataset=feedback_dataset, out=tmp_path / "c"))
    assert set(setup.data["train"]["objective"]) == {"sft"}
    assert len(setup.data["train"]) == 24 - setup.data["valid"].num_rows
