"""Configuration of the train and merge stages."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from codetune.schema import StrictModel

# More optimizer steps than any run does (a 1e29 is a typo, and a schedule over it is flat at 0)
MAX_STEPS = 100_000_000


class TrainConfig(StrictModel):
    """Fine-tune a model on a built dataset."""

    model: str = Field("tiny-gpt-bigcode", description="Hub id, local path or tiny preset name.")
    dataset: Path | None = Field(None, description="Dataset folder (default: the build stage's output).")
    method: str = Field(
        "lora",
        description="lora, adalora, qlora or full; kto or dpo (LoRA on a `build --format feedback` dataset).",
    )
    out: Path | None = Field(None, description="Run folder (default: WORKDIR/run).")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(
        None, gt=0, le=MAX_STEPS, description="Stop after this many optimizer steps."
    )
    lr: float = Field(2e-4, gt=0)
    packing: Literal["packed", "pad"] = Field(
        "packed",
        description="packed: documents concatenated up to batch_tokens, attention kept inside each "
        "document; pad: batch_size examples padded to the longest (seq2seq always pads).",
    )
    batch_tokens: int = Field(4096, gt=0, description="Tokens per micro-batch when packing.")
    pack_length: int | None = Field(
        None,
        gt=0,
        description="Longest packed row: a micro-batch is batch_tokens // pack_length rows (None: one row "
        "of batch_tokens). Without flash-attention, shorter rows keep sdpa's attention cost down.",
    )
    batch_size: int = Field(8, gt=0, description="Examples per micro-batch in pad mode.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Linear warmup, then cosine decay to 0.")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping (None: off).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 where the device supports it, else fp32."
    )
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="auto: flash-attention (varlen packing) when installed with CUDA, else sdpa."
    )
    gradient_checkpointing: bool = False
    completion_only: bool = Field(
        True, description="Loss only where the dataset's loss_mask is 1 (else on every non-pad token)."
    )
    lora_r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="Default: every linear layer but the LM head.")
    adalora_init_r: int = Field(12, gt=0, description="AdaLoRA: starting rank of every module.")
    adalora_target_r: int = Field(4, gt=0, description="AdaLoRA: average rank after budget allocation.")
    adalora_tinit: float = Field(0.1, ge=0, lt=1, description="AdaLoRA: fraction of steps before pruning.")
    adalora_tfinal: float = Field(0.2, ge=0, lt=1, description="AdaLoRA: fraction of steps at final rank.")
    adalora_delta_t: int = Field(1, ge=1, description="AdaLoRA: steps between two budget allocations.")
    preference_beta: float = Field(
        0.1, gt=0, description="kto/dpo: how far from the reference (the base, adapter off) a step may move."
    )
    kto_desirable_weight: float = Field(1.0, gt=0, description="kto: weight of accepted completions.")
    kto_undesirable_weight: float = Field(1.0, gt=0, description="kto: weight of rejected completions.")
    eval_every: int = Field(50, gt=0, description="Eval loss on the valid split every N optimizer steps.")
    eval_max_batches: int | None = Field(None, gt=0, description="Cap on eval micro-batches (None: all).")
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop after N evals without a better eval loss (None: never)."
    )
    save_every: int = Field(50, gt=0, description="Write a resumable checkpoint every N optimizer steps.")
    log_every: int = Field(1, gt=0, description="Write a metrics.jsonl row every N optimizer steps.")
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    seed: int = 0
    resume: bool = False


class MergeConfig(StrictModel):
    """Merge a run's adapter into its base model."""

    run: Path | None = Field(None, description="Run folder (default: the train stage's output).")
    out: Path | None = Field(None, description="Merged model folder (default: WORKDIR/merged).")
    check_samples: int = Field(4, ge=0, description="Valid examples whose logits are compared after merging.")
    atol: float = Field(1e-3, gt=0, description="Largest allowed logit difference, merged vs adapter.")
    dequantize: bool = Field(
        False, description="A 4-bit (QLoRA) run: merge into a bf16 copy of the base instead of refusing."
    )
