"""The training recipe: setup, train loop, checkpoint, clean up. Reads top to bottom.

Runs on one device or many through accelerate: ``accelerate launch -m codetune train ...`` gives
each process its share of the micro-batches; gradients are averaged by DDP/FSDP/DeepSpeed. The
loss is a sum over target tokens divided by the number of target tokens in the whole optimizer
step (all micro-batches, all processes), so packing, padding and accumulation all give the same
per-token objective.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.artifacts.dataset import read_dataset
from codetune.artifacts.manifest import has_manifest, update_manifest
from codetune.artifacts.paths import CHECKPOINTS, LOSS_PLOT, TOKENIZER
from codetune.artifacts.run import (
    append_metrics,
    best_checkpoint,
    checkpoint_folder,
    checkpoints,
    clear_metrics,
    newest_intact_checkpoint,
    read_metrics,
    read_run_manifest,
    truncate_metrics,
    weights_folder,
    write_checkpoint,
    write_run_manifest,
)
from codetune.errors import ConfigError, InputError
from codetune.files import atomic_dir, fingerprint
from codetune.modeling.logits import target_logits
from codetune.progress import StepProgress
from codetune.stage import StageResult, default_out
from codetune.train.config import MAX_STEPS, TrainConfig
from codetune.train.methods import Method, get_method, method_rows, quantization_config
from codetune.train.packing import IGNORE, Batches
from codetune.train.targets import format_table, parameter_table

logger = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2


# ----------------------------------------------------------------------------------------- inputs


def check_out(out: Path, print_: str, resume: bool) -> str:
    """'fresh', 'resume' or 'done'; errors when the folder holds something else."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; give a new or empty folder")
    if not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith(".")):
        if resume:
            logger.warning("--resume: %s holds no run yet, starting fresh", out)
        return "fresh"
    if not has_manifest(out):
        raise InputError(f"output folder {out} is not empty and holds no codetune run; choose another --out")
    manifest = read_run_manifest(out)
    if manifest.get("fingerprint") != print_:
        raise InputError(
            f"output folder {out} holds another run (model {manifest.get('model')!r}, method "
            f"{manifest.get('method')!r}, other settings); choose another --out or delete it"
        )
    if manifest.get("finished"):
        return "done"
    if not resume:
        raise InputError(f"output folder {out} holds an unfinished run of this config; add --resume")
    return "resume"


def run_fingerprint(cfg: TrainConfig, dataset_manifest: Any) -> str:
    """Everything that changes the result: the config (but where it goes) and the dataset."""
    settings = cfg.model_dump(mode="json", exclude={"out", "resume", "report_to", "save_every", "log_every"})
    return fingerprint(settings, dataset_manifest)


def mixed_precision(cfg: TrainConfig, method: Method) -> str:
    """accelerate's mixed_precision value for the requested precision on this machine."""
    import torch

    cuda = torch.cuda.is_available()
    if cfg.precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    if cfg.precision == "fp16" and not cuda:
        raise ConfigError("precision fp16 needs a CUDA GPU; use bf16 or fp32 on this machine")
    if cfg.precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU does not support bf16; use --set precision=fp16")
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[cfg.precision]


# ------------------------------------------------------------------------------------------- loss


def forward_loss(model: Any, batch: dict[str, Any], seq2seq: bool) -> tuple[Any, int]:
    """Summed cross-entropy over target tokens (never padding), and how many there were."""
    import torch
    import torch.nn.functional as F

    labels = batch["labels"]
    if "position_ids" in batch and labels.shape[0] > 1 and _uses_flash(model):
        # flash-attention's varlen path reads document boundaries only from a single row: flatten.
        batch = {key: value.reshape(1, -1) for key, value in batch.items()}
        labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if seq2seq:
        # Decoder inputs shifted by hand: passing labels would make peft's AdaLoRA add its own penalty.
        config = model.config
        start = torch.full_like(labels[:, :1], config.decoder_start_token_id)
        decoder_ids = torch.cat([start, labels[:, :-1]], dim=1).masked_fill_(
            torch.cat([start, labels[:, :-1]], dim=1) == IGNORE, config.pad_token_id
        )
        logits = model(**inputs, decoder_input_ids=decoder_ids).logits
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        return loss, int((labels != IGNORE).sum())
    # Shift the labels, not the logits: the logits are only made where a target follows.
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    keep = targets != IGNORE
    logits = target_logits(model, inputs, keep)
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), int(keep.sum())


def micro_loss(setup: Setup, model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """A micro-batch's summed loss: the method's own objective (DPO, KTO), else cross-entropy."""
    found = setup.method.loss(model, batch, setup.cfg)
    return found if found is not None else forward_loss(model, batch, setup.seq2seq)


def loss_units(setup: Setup, batch: dict[str, Any]) -> int:
    """What a micro-batch's loss sums over: the method's units (pairs, examples), else target tokens."""
    found = setup.method.units(batch)
    return found if found is not None else target_count(batch, setup.seq2seq)


def _uses_flash(model: Any) -> bool:
    return str(getattr(model.config, "_attn_implementation", "")).startswith("flash")


def choose_attention(model: Any, wanted: str, precision: str) -> None:
    """Switch to flash-attention when asked, or on 'auto' when it is installed and usable."""
    import torch

    if wanted == "auto":
        usable = torch.cuda.is_available() and precision in {"bf16", "fp16"}
        if not (usable and importlib.util.find_spec("flash_attn")):
            return
        wanted = "flash_attention_2"
        try:
            model.set_attn_implementation(wanted)
        except (ImportError, ValueError) as error:  # e.g. T5 has no flash-attention path
            logger.info("flash-attention not used: %s", str(error).splitlines()[0])
        return
    try:
        model.set_attn_implementation(wanted)
    except (ImportError, ValueError) as error:
        raise ConfigError(f"attention {wanted!r} is not usable here: {str(error).splitlines()[0]}") from None


def target_count(batch: dict[str, Any], seq2seq: bool) -> int:
    labels = batch["labels"] if seq2seq else batch["labels"][:, 1:]
    return int((labels != IGNORE).sum())


def shard_evenly(plan: list[Any], rank: int, world: int) -> list[tuple[Any, bool]]:
    """This process's share of ``plan``, as (batch, counted) pairs of the same length on every process.

    Under FSDP/ZeRO-3 every forward is a collective (parameters are gathered layer by layer): a
    process with one batch fewer than the others would leave them waiting forever. The short
    processes repeat a batch with ``counted=False``, so the metric sees every batch exactly once.
    """
    if not plan:
        return []
    per_process = math.ceil(len(plan) / world)
    mine = [(plan[i], True) for i in range(rank, len(plan), world)]
    return mine + [(plan[rank % len(plan)], False)] * (per_process - len(mine))


def evaluate(model: Any, batches: Batches, accelerator: Any, setup: Setup, max_batches: int | None) -> float:
    """Mean loss per target token (or the method's unit) over the valid split (all processes together)."""
    import torch

    model.eval()
    plan = batches.plan(0)[: max_batches or None]
    total = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    with torch.no_grad():
        for indices, counted in shard_evenly(plan, accelerator.process_index, accelerator.num_processes):
            batch = {k: v.to(accelerator.device) for k, v in batches.collate(indices).items()}
            with accelerator.autocast():
                loss, count = micro_loss(setup, model, batch)
            if counted:
                total += torch.tensor([float(loss), count], device=accelerator.device, dtype=torch.float64)
    total = accelerator.reduce(total, reduction="sum")
    model.train()
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


# ------------------------------------------------------------------------------------ checkpoints


def trainable_state(model: Any) -> dict[str, Any]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    folder: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any], method: Method
) -> None:
    """Weights, optimizer, scheduler, RNG and data position, written atomically (a kill leaves the last one)."""
    import numpy as np
    import torch

    kind, keys, position, has_gauss, gauss = np.random.get_state()
    # numpy's key as a list of ints: a checkpoint holds tensors, numbers and strings only (weights_only)
    numpy_state = [kind, keys.tolist(), int(position), int(has_gauss), float(gauss)]
    rng = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    parts = {
        "weights": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
    }
    if (extra := method.checkpoint_state(model)) is not None:
        parts["method"] = extra
    write_checkpoint(folder, parts, state)


def load_checkpoint(
    folder: Path, parts: dict[str, Any], model: Any, optimizer: Any, scheduler: Any, method: Method
) -> None:
    """Restore what save_checkpoint wrote (``parts``, read back by ``newest_intact_checkpoint``)."""
    import numpy as np
    import torch

    try:
        _, unexpected = model.load_state_dict(parts["weights"], strict=False)
        if unexpected:
            raise ValueError(f"{len(unexpected)} unknown tensors")
        optimizer.load_state_dict(parts["optimizer"])
        scheduler.load_state_dict(parts["scheduler"])
        rng = parts["rng"]
        random.setstate(rng["python"])
        kind, keys, position, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if "method" in parts:
            method.restore_state(model, parts["method"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
        raise InputError(
            f"checkpoint {folder} does not fit this run ({error}); start again in a new --out"
        ) from None


def prune_checkpoints(run: Path) -> None:
    steps = checkpoints(run)
    for old in steps[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def save_weights(folder: Path, accelerator: Any, model: Any, tokenizer: Any, peft: bool) -> None:
    """The run's deliverable: a peft adapter folder or a full Hugging Face model folder.

    Called on every process: ``get_state_dict`` gathers FSDP/ZeRO-3 shards; the main process writes.
    """
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        with atomic_dir(folder) as tmp:
            accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state)
            if not peft:
                tokenizer.save_pretrained(tmp)


# ---------------------------------------------------------------------------------------- metrics


def plot_loss(run: Path) -> Path | None:
    """loss.png: train loss per step and eval loss per eval, from metrics.jsonl."""
    rows = read_metrics(run)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), marker="o", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per token")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run / LOSS_PLOT, dpi=100)
    plt.close(fig)
    return run / LOSS_PLOT


# ----------------------------------------------------------------------------------------- recipe


@dataclass
class Setup:
    """What the first step of the recipe checked and opened; every later step reads it."""

    cfg: TrainConfig
    method: Method
    out: Path
    data: Any
    seq2seq: bool
    ref: Any
    precision: str
    run_print: str
    accelerator: Any
    status: str
    built_for: str | None = None  # the model whose tokenizer `codetune build` used (stats.json)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def kind(self) -> str:
        return "seq2seq" if self.seq2seq else "causal"


def train(cfg: TrainConfig) -> StageResult:
    """Fine-tune ``cfg.model`` on ``cfg.dataset`` with ``cfg.method``; writes a run folder."""
    setup = check_inputs(cfg)
    if setup.status == "done":
        summary = read_run_manifest(setup.out).get("summary", {})
        return StageResult("train", setup.out, summary, skipped=True)
    tokenizer, model, new_tokens = load_base(setup)
    train_batches, valid_batches = make_batches(setup, tokenizer)
    steps_per_epoch, total_steps = plan_steps(setup, train_batches)
    model = setup.method.wrap(model, cfg, total_steps, new_tokens)
    table = parameter_table(model)
    if setup.main:
        logger.info("parameters:\n%s", format_table(table))
    optimizer, scheduler = make_optimizer(cfg, model, total_steps)
    model, optimizer = setup.accelerator.prepare(model, optimizer)
    state = start_or_resume(setup, model, optimizer, scheduler, tokenizer)
    elapsed, start_tokens, last_loss = train_loop(
        setup,
        model,
        optimizer,
        scheduler,
        tokenizer,
        state,
        train_batches,
        valid_batches,
        steps_per_epoch,
        total_steps,
    )
    summary = save_results(setup, model, tokenizer, state, table, last_loss, elapsed, start_tokens)
    return StageResult("train", setup.out, summary)


def check_inputs(cfg: TrainConfig) -> Setup:
    """Check every input and build the Accelerator before touching the output folder."""
    from accelerate import Accelerator

    from codetune.modeling.loading import is_seq2seq_config, load_config, resolve_model

    method = get_method(cfg.method)
    method.check(cfg)
    if cfg.dataset is None:
        raise ConfigError("train needs --dataset (a folder from `codetune build`)")
    out = default_out(cfg.out, None, "run")
    dataset = read_dataset(cfg.dataset)
    dataset.split("train")
    data = {
        name: method_rows(method, split, f"dataset {cfg.dataset}") for name, split in dataset.splits.items()
    }
    if not len(data["train"]):
        raise InputError(f"dataset {cfg.dataset} has no {method.objective} rows in its train split")
    kind = dataset.kind
    ref = resolve_model(cfg.model)
    seq2seq = is_seq2seq_config(load_config(ref.base))
    if kind == "seq2seq" and not seq2seq:
        raise InputError(
            f"dataset {cfg.dataset} is seq2seq but {cfg.model} is a causal LM; use an encoder-decoder"
        )
    if kind != "seq2seq" and seq2seq:
        raise InputError(f"dataset {cfg.dataset} is {kind} but {cfg.model} is encoder-decoder (seq2seq)")
    check_packing(cfg, data["train"], seq2seq)
    if method.quantized:
        quantization_config()  # fails early and clearly without CUDA or bitsandbytes
    for tracker in cfg.report_to:
        if importlib.util.find_spec(tracker) is None:
            raise ConfigError(f"report_to {tracker}: the package is not installed (pip install {tracker})")
    precision = mixed_precision(cfg, method)
    run_print = run_fingerprint(cfg, dataset.identity)
    accelerator = Accelerator(
        cpu=launched_without_gpu(),
        mixed_precision=precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with=cfg.report_to or None,
        project_dir=str(out / "logs"),
    )
    if accelerator.gradient_accumulation_steps != cfg.grad_accum:
        raise ConfigError(
            f"the accelerate config accumulates {accelerator.gradient_accumulation_steps} micro-batches but "
            f"grad_accum is {cfg.grad_accum}; remove gradient_accumulation_steps from the accelerate config "
            "(codetune passes grad_accum to accelerate)"
        )
    status = check_out(out, run_print, cfg.resume)
    sharded = sharded_state(accelerator)
    if status == "resume" and sharded:
        raise ConfigError(
            f"--resume is not supported under {sharded}: its checkpoints would hold one process's shard "
            "only; start the run again in a new --out (or train without sharding)"
        )
    accelerator.wait_for_everyone()  # every process has looked at the folder before the first one writes
    built_for = dataset.stats.get("model") if isinstance(dataset.stats.get("model"), str) else None
    return Setup(cfg, method, out, data, seq2seq, ref, precision, run_print, accelerator, status, built_for)


def check_packing(cfg: TrainConfig, train: Any, seq2seq: bool) -> None:
    """Refuse a packed row shorter than the longest example: packing would cut every longer one
    (``batch_tokens=1`` would train on nothing but first tokens, which are never targets)."""
    import pyarrow.compute as pc

    if seq2seq or cfg.packing != "packed" or len(train) == 0:
        return
    row, name = cfg.batch_tokens, "batch_tokens"
    if cfg.pack_length and cfg.pack_length < cfg.batch_tokens:
        row, name = cfg.pack_length, "pack_length"
    longest = pc.max(pc.list_value_length(train.data.column("input_ids"))).as_py()
    if row < longest:
        raise ConfigError(
            f"{name} {row} is shorter than the dataset's longest example ({longest} tokens): packing would "
            f"cut examples to {row} tokens; set {name} to at least {longest} (the dataset's max_length)"
        )


def launched_without_gpu() -> bool:
    """A multi-process launch (torchrun's WORLD_SIZE) on a machine without CUDA: train on CPU over gloo.

    `accelerate launch --cpu` starts one process only (its multi-CPU path needs mpirun), so the
    two-process CPU config launches as multi-GPU and relies on this to pick the CPU.
    """
    import torch

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def sharded_state(accelerator: Any) -> str | None:
    """The sharding that keeps parameters or optimizer state split over processes (None: no sharding).

    Resumable checkpoints here are written by the main process from its own copy, which is only the
    whole state when nothing is sharded.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return "FSDP"
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return f"DeepSpeed ZeRO-{accelerator.state.deepspeed_plugin.zero_stage}"
    return None


def load_base(setup: Setup) -> tuple[Any, Any, list[int]]:
    """The dataset's tokenizer, the base model (rows added for new tokens) and those new token ids."""
    from accelerate.utils import set_seed

    from codetune.modeling.loading import load_model, load_tokenizer

    cfg = setup.cfg
    set_seed(cfg.seed)
    tok_dir = Path(cfg.dataset) / TOKENIZER
    base_tokenizer = load_tokenizer(setup.ref)
    saved = (tok_dir / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(str(tok_dir)) if saved else base_tokenizer
    check_dataset_tokenizer(setup, base_tokenizer, tokenizer if saved else None)
    # Tokens the build added (FIM sentinels): their embedding and head rows start untrained.
    base_vocab = base_tokenizer.get_vocab()
    new_tokens = sorted(i for token, i in tokenizer.get_vocab().items() if token not in base_vocab)
    quantization = quantization_config() if setup.method.quantized else None
    model = load_model(setup.ref, quantization_config=quantization)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.use_cache = False
    choose_attention(model, cfg.attention, setup.precision)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if setup.method.peft:
            model.enable_input_require_grads()
    return tokenizer, model, new_tokens


def check_dataset_tokenizer(setup: Setup, base: Any, saved: Any | None) -> None:
    """Refuse a dataset made with another model's tokenizer: its token ids would stand for other
    tokens in this model. ``saved`` is the dataset's own tokenizer/ (None when it was removed)."""
    cfg = setup.cfg
    made = f" (built for {setup.built_for})" if setup.built_for else ""
    rebuild = f"build the dataset again with --model {cfg.model}"
    base_vocab = base.get_vocab()
    if saved is not None:
        vocab = saved.get_vocab()
        moved = sum(1 for token, i in base_vocab.items() if vocab.get(token) != i)
        if moved:
            raise InputError(
                f"dataset {cfg.dataset}{made} was made with another tokenizer: {moved:,} of the "
                f"{len(base_vocab):,} tokens of {cfg.model} have other ids in it; {rebuild}"
            )
        return
    import pyarrow.compute as pc

    train = setup.data["train"]
    columns = [c for c in ("input_ids", "labels") if c in train.column_names]
    largest = max((pc.max(pc.list_flatten(train.data.column(c))).as_py() or 0 for c in columns), default=0)
    if largest >= len(base):
        raise InputError(
            f"dataset {cfg.dataset}{made} holds token ids up to {largest:,} but {cfg.model} has "
            f"{len(base):,} tokens, and the dataset's {TOKENIZER}/ folder is missing: it was made with "
            f"another tokenizer; {rebuild}"
        )
    if setup.built_for and setup.built_for != cfg.model:
        logger.warning(
            "dataset %s was built for %s and its %s/ folder is missing: nothing shows its token ids mean "
            "the same in %s; if the two tokenizers differ, %s",
            cfg.dataset,
            setup.built_for,
            TOKENIZER,
            cfg.model,
            rebuild,
        )


def make_batches(setup: Setup, tokenizer: Any) -> tuple[Batches, Batches | None]:
    """Packed or padded micro-batches of the train and valid splits."""
    cfg, data = setup.cfg, setup.data
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    columns = ["input_ids", "labels"] if setup.seq2seq else ["input_ids", "loss_mask", *setup.method.columns]
    columns = [c for c in columns if c in data["train"].column_names]
    batch_args = {
        "kind": setup.kind,
        "mode": cfg.packing,
        "batch_tokens": cfg.batch_tokens,
        "batch_size": cfg.batch_size,
        "pad_id": pad_id,
        "seed": cfg.seed,
        "completion_only": cfg.completion_only,
        "pack_length": cfg.pack_length,
        "collate": setup.method.collate,
    }
    train_batches = Batches(data["train"].select_columns(columns).to_list(), **batch_args)
    valid_batches = None
    if "valid" in data and len(data["valid"]) > 0:
        valid_batches = Batches(data["valid"].select_columns(columns).to_list(), **batch_args)
    return train_batches, valid_batches


def plan_steps(setup: Setup, train_batches: Batches) -> tuple[int, int]:
    """Optimizer steps per epoch and in all: each process takes every num_processes-th micro-batch,
    a step is grad_accum of them (an epoch's leftover micro-batches, fewer than a step, are dropped)."""
    cfg, processes = setup.cfg, setup.accelerator.num_processes
    steps_per_epoch = len(train_batches.plan(0)) // processes // cfg.grad_accum
    if steps_per_epoch == 0:
        raise InputError(
            f"dataset {cfg.dataset} has too few examples for one optimizer step of {cfg.grad_accum} "
            f"micro-batch(es) on each of {processes} process(es)"
        )
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    if total > MAX_STEPS:
        raise ConfigError(
            f"epochs {cfg.epochs:g} over {steps_per_epoch:,} steps an epoch make {total:,} optimizer steps, "
            f"more than {MAX_STEPS:,}; lower epochs or set max_steps"
        )
    return steps_per_epoch, total


def make_optimizer(cfg: TrainConfig, model: Any, total_steps: int) -> tuple[Any, Any]:
    """AdamW (no decay on biases and norms) with linear warmup and cosine decay."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps
    )
    return optimizer, scheduler


def start_or_resume(
    setup: Setup, model: Any, optimizer: Any, scheduler: Any, tokenizer: Any
) -> dict[str, Any]:
    """The loop's state: from the last checkpoint on --resume, else fresh (manifest and tokenizer written)."""
    cfg, out, accelerator = setup.cfg, setup.out, setup.accelerator
    state = {
        "step": 0,
        "epoch": 0,
        "batch": 0,
        "tokens": 0,
        "best_eval": None,
        "best_step": None,
        "bad_evals": 0,
    }
    found = newest_intact_checkpoint(out) if setup.status == "resume" else None
    if found is not None:
        checkpoint, parts, state = found
        load_checkpoint(
            checkpoint, parts, accelerator.unwrap_model(model), optimizer, scheduler, setup.method
        )
        if setup.main:
            truncate_metrics(out, state["step"])
        logger.info("resumed from %s (step %d)", checkpoint, state["step"])
    elif setup.main:
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        clear_metrics(out)
        manifest = {
            "model": cfg.model,
            "method": cfg.method,
            "dataset": str(cfg.dataset),
            "kind": setup.kind,
            "fingerprint": setup.run_print,
            "finished": False,
            "config": cfg.model_dump(mode="json"),
        }
        write_run_manifest(out, manifest)
        tok_dir = Path(cfg.dataset) / TOKENIZER
        if tok_dir.is_dir():
            shutil.copytree(tok_dir, out / TOKENIZER, dirs_exist_ok=True)
        else:
            tokenizer.save_pretrained(out / TOKENIZER)
    if cfg.report_to:
        accelerator.init_trackers("codetune", config=cfg.model_dump(mode="json"))
    if sharded_state(accelerator) and setup.main:
        logger.warning(
            "%s: no resumable checkpoints are written (only the best and final weights)",
            sharded_state(accelerator),
        )
    accelerator.wait_for_everyone()
    return state


def train_step(
    setup: Setup,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    window: list[dict[str, Any]],
    window_tokens: int,
    step: int,
) -> tuple[float, int, int]:
    """Optimizer step number ``step`` over ``window`` (grad_accum micro-batches of ``window_tokens``
    tokens); returns (summed loss, targets, tokens), all three over all processes.

    accelerate's ``accumulate`` skips the gradient sync (DDP) and the optimizer step on all but the
    last micro-batch, and tells DeepSpeed where the step ends. Its ``backward`` divides the loss by
    grad_accum; the loss here is already per target token of the whole step, so it is scaled back.
    """
    import torch

    accelerator, method = setup.accelerator, setup.method
    inner = accelerator.unwrap_model(model)
    targets = sum(loss_units(setup, b) for b in window)
    counts = accelerator.reduce(
        torch.tensor([targets, window_tokens], device=accelerator.device), reduction="sum"
    )
    step_targets, step_tokens = max(int(counts[0]), 1), int(counts[1])
    # DDP averages gradients over processes: scale so the result is per target token.
    scale = accelerator.num_processes * accelerator.gradient_accumulation_steps / step_targets
    step_loss = 0.0
    for batch in window:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss_sum, _ = micro_loss(setup, model, batch)
            loss = loss_sum * scale
            if (extra := method.extra_loss(inner)) is not None:
                loss = loss + extra * accelerator.gradient_accumulation_steps / len(window)
            accelerator.backward(loss)
            if accelerator.sync_gradients and setup.cfg.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), setup.cfg.max_grad_norm)
            optimizer.step()
        step_loss += float(loss_sum.detach())
    scheduler.step()
    method.after_step(inner, step)  # before zero_grad: AdaLoRA scores importance from the gradients
    optimizer.zero_grad(set_to_none=True)
    total = accelerator.reduce(torch.tensor([step_loss], device=accelerator.device), reduction="sum")
    return float(total), step_targets, step_tokens


def train_loop(
    setup: Setup,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    tokenizer: Any,
    state: dict[str, Any],
    train_batches: Batches,
    valid_batches: Batches | None,
    steps_per_epoch: int,
    total_steps: int,
) -> tuple[float, int, float]:
    """Steps until total_steps or early stopping, with evals, metrics and checkpoints; returns
    (seconds spent training, tokens seen before this session, last train loss)."""
    cfg, out, accelerator, method = setup.cfg, setup.out, setup.accelerator, setup.method
    inner = accelerator.unwrap_model(model)
    main = setup.main
    # A fresh run first measures the untrained model on valid: the curve's start.
    if valid_batches is not None and state["step"] == 0:
        eval_loss = evaluate(model, valid_batches, accelerator, setup, cfg.eval_max_batches)
        if main:
            append_metrics(out, {"step": 0, "eval_loss": round(eval_loss, 6)})
    model.train()
    started = time.perf_counter()
    paused = 0.0  # seconds spent on evals and checkpoints, not counted in tokens/s
    start_tokens = state["tokens"]
    last_loss = float("nan")
    per_epoch = steps_per_epoch * cfg.grad_accum
    progress = StepProgress("train", total_steps, done=state["step"], enabled=main)
    with progress:
        while state["step"] < total_steps:
            plan = train_batches.plan(state["epoch"])
            mine = plan[accelerator.process_index :: accelerator.num_processes][:per_epoch]
            if state["batch"] >= len(mine):
                state["epoch"] += 1
                state["batch"] = 0
                continue
            chosen = mine[state["batch"] : state["batch"] + cfg.grad_accum]
            window = [train_batches.collate(indices) for indices in chosen]
            window_tokens = sum(train_batches.tokens(indices) for indices in chosen)
            loss_sum, step_targets, step_tokens = train_step(
                setup, model, optimizer, scheduler, window, window_tokens, state["step"] + 1
            )
            state["tokens"] += step_tokens  # all processes: tokens/s is the run's, not one process's
            state["step"] += 1
            state["batch"] += len(window)
            step = state["step"]
            last_loss = loss_sum / step_targets
            progress.update(step, loss=last_loss, tokens=state["tokens"] - start_tokens)
            if main and step % cfg.log_every == 0:
                row = {
                    "step": step,
                    "loss": round(last_loss, 6),
                    "lr": scheduler.get_last_lr()[0],
                    "tokens": state["tokens"],
                }
                append_metrics(out, row)
                if cfg.report_to:
                    accelerator.log({"train/loss": last_loss, "train/lr": row["lr"]}, step=step)
            if valid_batches is not None and (step % cfg.eval_every == 0 or step == total_steps):
                eval_started = time.perf_counter()
                stop = eval_and_keep_best(setup, model, tokenizer, state, valid_batches)
                paused += time.perf_counter() - eval_started
                progress.pause(time.perf_counter() - eval_started)
                if stop:
                    break
            if step % cfg.save_every == 0 and step < total_steps and not sharded_state(accelerator):
                save_started = time.perf_counter()
                if main:
                    checkpoint = checkpoint_folder(out, step)
                    save_checkpoint(checkpoint, inner, optimizer, scheduler, state, method)
                    prune_checkpoints(out)
                accelerator.wait_for_everyone()
                paused += time.perf_counter() - save_started
                progress.pause(time.perf_counter() - save_started)
    return time.perf_counter() - started - paused, start_tokens, last_loss


def eval_and_keep_best(
    setup: Setup, model: Any, tokenizer: Any, state: dict[str, Any], valid_batches: Batches
) -> bool:
    """Eval loss on valid; the best weights so far go to checkpoints/best. True: stop early."""
    cfg, accelerator, step = setup.cfg, setup.accelerator, state["step"]
    eval_loss = evaluate(model, valid_batches, accelerator, setup, cfg.eval_max_batches)
    if setup.main:
        append_metrics(setup.out, {"step": step, "eval_loss": round(eval_loss, 6)})
        if cfg.report_to:
            accelerator.log({"eval/loss": eval_loss}, step=step)
    if state["best_eval"] is None or eval_loss < state["best_eval"]:
        state.update(best_eval=eval_loss, best_step=step, bad_evals=0)
        save_weights(best_checkpoint(setup.out), accelerator, model, tokenizer, setup.method.peft)
        return False
    state["bad_evals"] += 1
    if cfg.early_stopping_patience and state["bad_evals"] >= cfg.early_stopping_patience:
        logger.info("early stopping at step %d (best eval loss at step %s)", step, state["best_step"])
        return True
    return False


def save_results(
    setup: Setup,
    model: Any,
    tokenizer: Any,
    state: dict[str, Any],
    table: dict[str, Any],
    last_loss: float,
    elapsed: float,
    start_tokens: int,
) -> dict[str, Any]:
    """The deliverable (the best weights by eval loss when there were evals, else the last ones),
    loss.png and the finished manifest; returns the summary."""
    accelerator, out, method = setup.accelerator, setup.out, setup.method
    accelerator.wait_for_everyone()
    summary: dict[str, Any] = {
        "steps": state["step"],
        "train_loss": round(last_loss, 4),
        "best_eval_loss": round(state["best_eval"], 4) if state["best_eval"] is not None else None,
        "best_step": state["best_step"],
        "tokens_per_s": round((state["tokens"] - start_tokens) / max(elapsed, 1e-9), 1),
        "processes": accelerator.num_processes,
        **table,
    }
    summary |= method.summary(accelerator.unwrap_model(model), out if setup.main else None)
    final = weights_folder(out, method.peft)
    best = best_checkpoint(out)
    if state["best_step"] is None:
        save_weights(final, accelerator, model, tokenizer, method.peft)
    if setup.main:
        if state["best_step"] is not None:
            with atomic_dir(final) as tmp:
                shutil.copytree(best, tmp, dirs_exist_ok=True)
        plot_loss(out)
        update_manifest(out, finished=True, summary=summary, parameters=table)
    if setup.cfg.report_to:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return summary
