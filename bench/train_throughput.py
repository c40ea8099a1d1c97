"""Training throughput: codetune's packed recipe vs TRL's SFTTrainer (packing, BFD, padding-free: what a
user would pick) and vs the Elm use case's recipe (HF Trainer + peft LoRA, padding="max_length",
max_length 512); same tiny model, same real code, same LoRA, same token budget, same number of steps.

Both train LoRA r=8/alpha=16 on q_proj/v_proj of tiny-starcoder2 (the Elm write-up's model family
and targets) at lr 3e-4, 4 x 512 token slots per micro-batch. The data are function/class-level
units of the Python standard library (like the Elm write-up's code units). The baseline pads every
unit to 512 tokens; codetune packs units into the same 2048-token budget with attention kept
inside each unit (4 packed rows of at most 512 tokens). TRL gets the very token ids codetune trains on
(pre-tokenised, EOS appended) and packs them with best-fit decreasing into 4 bins of 512 tokens per
micro-batch, flattened padding-free into one row with position ids (transformers keeps attention
inside each unit from those). TRL's own defaults that would change the comparison rather than the
tool are set to codetune's: no gradient checkpointing, fp32 on CPU, lr 3e-4, no warmup.
Reported: non-pad tokens per second of training, and eval loss per token on the same held-out units
for every resulting model (computed the same way for all). The last line compares codetune with TRL.

    python bench/train_throughput.py [--steps 10] [--model tiny-starcoder2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch

from codetune.modeling.loading import load_model, load_tokenizer
from codetune.modeling.presets import stdlib_dir
from codetune.train.config import TrainConfig
from codetune.train.packing import Batches
from codetune.train.recipe import forward_loss, train

MAX_LENGTH = 512
BATCH = 4


def code_units(limit: int) -> list[str]:
    """Functions, methods and class headers of standard-library modules, in file order (syntax units)."""
    units = []
    for path in sorted(stdlib_dir().glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for unit in re.split(r"\n(?=[ \t]*(?:def |class |async def ))", text)[1:]:
            if unit.count("\n") >= 3 and len(unit) < 20_000:
                units.append(unit.rstrip() + "\n")
                if len(units) == limit:
                    return units
    return units


def write_dataset(folder: Path, tokenizer, units: list[str], valid: int) -> Path:
    """The units in the `codetune build` layout (loss on every token, as the Elm recipe trains)."""
    from datasets import Dataset, DatasetDict

    def rows(texts: list[str]) -> dict:
        ids = [[*tokenizer(t)["input_ids"][: MAX_LENGTH - 1], tokenizer.eos_token_id] for t in texts]
        return {"input_ids": ids, "loss_mask": [[1] * len(i) for i in ids], "text": texts}

    DatasetDict(
        {
            "train": Dataset.from_dict(rows(units[valid:])),
            "valid": Dataset.from_dict(rows(units[:valid])),
            "test": Dataset.from_dict(rows(units[:1])),
        }
    ).save_to_disk(str(folder))
    (folder / "stats.json").write_text(
        json.dumps({"format": "units", "kind": "causal", "max_length": MAX_LENGTH})
    )
    tokenizer.save_pretrained(folder / "tokenizer")
    return folder


def eval_loss(model, dataset: Path) -> float:
    """Loss per token on the valid units, each unit alone in its attention (same for both models)."""
    from datasets import load_from_disk

    rows = load_from_disk(str(dataset))["valid"].select_columns(["input_ids", "loss_mask"]).to_list()
    batches = Batches(rows, kind="causal", mode="packed", batch_tokens=2048, batch_size=1, pad_id=0, seed=0)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for indices in batches.plan(0):
            loss, n = forward_loss(model, batches.collate(indices), seq2seq=False)
            total, count = total + float(loss), count + n
    return total / count


def baseline(model_name: str, units: list[str], steps: int, out: Path) -> tuple[float, object]:
    """The Elm write-up's recipe, as written (CPU: no fp16); returns (non-pad tokens/s, model)."""
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    tokenizer, model = prepared(model_name)

    def tokenize_function(examples):
        encoding = tokenizer(examples["text"], truncation=True, padding="max_length", max_length=MAX_LENGTH)
        encoding["labels"] = encoding["input_ids"].copy()
        return encoding

    data = Dataset.from_dict({"text": units}).map(tokenize_function, batched=True, remove_columns=["text"])
    model = get_peft_model(model, lora_config())

    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=3e-4,
        save_strategy="no",
        logging_steps=10**6,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        seed=0,
        disable_tqdm=True,
    )
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator)
    return timed_train(trainer), trainer.model


def lora_config():
    from peft import LoraConfig

    return LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj"],
        lora_dropout=0.05,
        bias="none",
        task_type="CAUSAL_LM",
    )


def prepared(model_name: str, device: str | None = None):
    """(tokenizer, model in train mode with its pad id set), as both baselines start."""
    tokenizer = load_tokenizer(model_name)
    model = load_model(model_name, device=device)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.train()
    return tokenizer, model


def timed_train(trainer) -> float:
    """Run a (TRL or HF) trainer; non-pad tokens per second, counted from what its collator hands over."""
    collator, seen = trainer.data_collator, {"tokens": 0}

    def counting(features):
        batch = collator(features)
        mask = batch.get("attention_mask")
        seen["tokens"] += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
        return batch

    trainer.data_collator = counting
    started = time.perf_counter()
    trainer.train()
    return seen["tokens"] / (time.perf_counter() - started)


def sft_trainer(
    model, tokenizer, rows, out: Path, *, steps: int, max_length: int, batch: int, lr: float, peft_config
):
    """TRL's SFTTrainer packing ``rows`` (pre-tokenised) best-fit decreasing into ``batch`` x ``max_length``,
    padding-free. TRL defaults that would change the comparison rather than the tool are set to
    codetune's: no gradient checkpointing, bf16 only on CUDA, cosine schedule, no warmup."""
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(out),
        packing=True,
        packing_strategy="bfd",
        padding_free=True,
        max_length=max_length,
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        gradient_checkpointing=False,
        bf16=cuda,
        save_strategy="no",
        logging_steps=10**6,
        report_to="none",
        use_cpu=not cuda,
        seed=0,
        disable_tqdm=True,
    )
    return SFTTrainer(
        model=model, args=args, train_dataset=rows, processing_class=tokenizer, peft_config=peft_config
    )


def trl_sft(
    model_name: str,
    dataset: Path,
    steps: int,
    out: Path,
    *,
    max_length: int = MAX_LENGTH,
    batch: int = BATCH,
    lr: float = 3e-4,
    peft_for=lambda model: lora_config(),
    device: str | None = None,
) -> tuple[float, object]:
    """TRL's SFTTrainer on codetune's own token ids; returns (non-pad tokens/s, model)."""
    from datasets import load_from_disk

    tokenizer, model = prepared(model_name, device=device)
    rows = load_from_disk(str(dataset))["train"].select_columns(["input_ids"])
    trainer = sft_trainer(
        model,
        tokenizer,
        rows,
        out,
        steps=steps,
        max_length=max_length,
        batch=batch,
        lr=lr,
        peft_config=peft_for(model),
    )
    return timed_train(trainer), trainer.model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", default="tiny-starcoder2")
    parser.add_argument("--units", type=int, default=1200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = load_tokenizer(args.model)
    units = code_units(args.units)
    work = Path(tempfile.mkdtemp(prefix="codetune-bench-"))
    try:
        dataset = write_dataset(work / "dataset", tokenizer, units, valid=64)
        train_units = units[64:]
        lengths = [len(r) for r in tokenizer(train_units)["input_ids"]]
        print(
            f"data: {len(train_units)} stdlib units, mean {sum(lengths) / len(lengths):.0f} tokens, "
            f"{sum(min(n, MAX_LENGTH) for n in lengths)} tokens in all; {args.steps} steps each"
        )

        base_tps, base_model = baseline(args.model, train_units, args.steps, work / "hf")
        base_loss = eval_loss(base_model, dataset)
        print(
            f"HF Trainer, padding=max_length 512:      {base_tps:8.0f} non-pad tokens/s, eval loss/token {base_loss:.4f}"
        )
        trl_tps, trl_model = trl_sft(args.model, dataset, args.steps, work / "trl")
        trl_loss = eval_loss(trl_model, dataset)
        print(
            f"TRL SFTTrainer, packing=bfd, padding_free: {trl_tps:8.0f} non-pad tokens/s, eval loss/token {trl_loss:.4f}"
        )

        cfg = TrainConfig(
            model=args.model,
            dataset=dataset,
            method="lora",
            out=work / "run",
            max_steps=args.steps,
            lr=3e-4,
            lora_r=8,
            lora_alpha=16,
            lora_dropout=0.05,
            target_modules=["q_proj", "v_proj"],
            batch_tokens=BATCH * MAX_LENGTH,
            pack_length=MAX_LENGTH,
            warmup_ratio=0.0,
            eval_every=10**6,
            precision="auto",
            completion_only=False,
            max_grad_norm=1.0,
        )
        result = train(cfg)
        ours_tps = result.summary["tokens_per_s"]
        ours_loss = eval_loss(load_model(str(result.out)), dataset)
        print(
            f"codetune, packed {BATCH} x {MAX_LENGTH} tokens:          {ours_tps:8.0f} non-pad tokens/s, "
            f"eval loss/token {ours_loss:.4f}"
        )
        print(
            f"codetune vs HF Trainer padded to 512: {ours_tps / base_tps:.2f}x non-pad tokens/s "
            f"(eval loss/token {ours_loss:.3f} vs {base_loss:.3f})"
        )
        print(f"eval loss/token: codetune {ours_loss:.4f}, TRL {trl_loss:.4f} (lower is better)")
        print(
            f"ratio: {ours_tps / trl_tps:.2f}x non-pad tokens/s, codetune vs TRL SFTTrainer "
            "(packing=bfd, padding_free)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
