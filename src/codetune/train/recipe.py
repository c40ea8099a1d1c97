"""The training recipe: setup, train loop, checkpoint, clean up. Reads top to bottom.

Runs on one device or many through accelerate: ``accelerate launch -m codetune train ...`` gives
each process its share of the micro-batches; gradients are averaged by DDP/FSDP/DeepSpeed. The
loss is a sum over target tokens divided by the number of target tokens in the whole optimizer
step (all micro-batches, all processes), so packing, padding and accumulation all give the same
per-token objective.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from codetune.errors import ConfigError, InputError
from codetune.files import atomic_dir, fingerprint, read_json, write_json
from codetune.stage import StageResult, default_out
from codetune.train.config import TrainConfig
from codetune.train.methods import Method, adalora_orth_reg, adalora_ranks, get_method, quantization_config
from codetune.train.packing import IGNORE, Batches
from codetune.train.targets import format_table, parameter_table

logger = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2


# ----------------------------------------------------------------------------------------- inputs


def read_dataset(folder: Path) -> tuple[Any, dict[str, Any]]:
    """The dataset's splits and stats.json, with clear errors for a missing or foreign folder."""
    from datasets import load_from_disk

    if not folder.is_dir():
        raise InputError(f"dataset folder not found: {folder}")
    stats_path = folder / "stats.json"
    stats = read_json(stats_path) if stats_path.is_file() else {}
    try:
        data = load_from_disk(str(folder))
    except Exception as error:  # datasets raises FileNotFoundError or its own types
        raise InputError(f"{folder} is not a dataset folder from `codetune build`: {error}") from None
    if "train" not in data:
        raise InputError(f"dataset {folder} has no train split")
    if "kind" not in stats:
        stats["kind"] = "seq2seq" if "labels" in data["train"].column_names else "causal"
    return data, stats


def check_out(out: Path, print_: str, resume: bool) -> str:
    """'fresh', 'resume' or 'done'; errors when the folder holds something else."""
    manifest_path = out / "manifest.json"
    if not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith(".")):
        if resume:
            logger.warning("--resume: %s holds no run yet, starting fresh", out)
        return "fresh"
    if not manifest_path.is_file():
        raise InputError(f"output folder {out} is not empty and holds no codetune run; choose another --out")
    manifest = read_json(manifest_path)
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
    if seq2seq:
        # Decoder inputs shifted by hand: passing labels would make peft's AdaLoRA add its own penalty.
        config = model.config
        start = torch.full_like(labels[:, :1], config.decoder_start_token_id)
        decoder_ids = torch.cat([start, labels[:, :-1]], dim=1).masked_fill_(
            torch.cat([start, labels[:, :-1]], dim=1) == IGNORE, config.pad_token_id
        )
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, decoder_input_ids=decoder_ids).logits
        targets = labels
    else:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, use_cache=False).logits[:, :-1]
        targets = labels[:, 1:]
    loss = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return loss, int((targets != IGNORE).sum())


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


def evaluate(model: Any, batches: Batches, accelerator: Any, seq2seq: bool, max_batches: int | None) -> float:
    """Mean loss per target token over the valid split (all processes together)."""
    import torch

    model.eval()
    plan = batches.plan(0)[: max_batches or None]
    mine = plan[accelerator.process_index :: accelerator.num_processes]
    total = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    with torch.no_grad():
        for indices in mine:
            batch = {k: v.to(accelerator.device) for k, v in batches.collate(indices).items()}
            loss, count = forward_loss(model, batch, seq2seq)
            total += torch.tensor([float(loss), count], device=accelerator.device, dtype=torch.float64)
    total = accelerator.reduce(total, reduction="sum")
    model.train()
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


# ------------------------------------------------------------------------------------ checkpoints


def trainable_state(model: Any) -> dict[str, Any]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]) -> None:
    """Weights, optimizer, scheduler, RNG and data position, written atomically (a kill leaves the last one)."""
    import numpy as np
    import torch

    with atomic_dir(folder) as tmp:
        torch.save(trainable_state(model), tmp / "weights.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        allocator = getattr(getattr(model, "base_model", None), "rankallocator", None)
        if allocator is not None:
            torch.save(
                {k: getattr(allocator, k) for k in ("ipt", "exp_avg_ipt", "exp_avg_unc")}, tmp / "adalora.pt"
            )
        write_json(tmp / "state.json", state)


def latest_checkpoint(run: Path) -> Path | None:
    steps = sorted((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return steps[-1] if steps else None


def load_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore what save_checkpoint wrote; returns the training state (step, epoch, batch, ...)."""
    import numpy as np
    import torch

    _, unexpected = model.load_state_dict(torch.load(folder / "weights.pt", weights_only=False), strict=False)
    if unexpected:
        raise InputError(f"checkpoint {folder} does not match this model ({len(unexpected)} unknown tensors)")
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
    rng = torch.load(folder / "rng.pt", weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    allocator = getattr(getattr(model, "base_model", None), "rankallocator", None)
    if allocator is not None and (folder / "adalora.pt").is_file():
        for key, value in torch.load(folder / "adalora.pt", weights_only=False).items():
            setattr(allocator, key, value)
    return read_json(folder / "state.json")


def prune_checkpoints(run: Path) -> None:
    steps = sorted((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
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


def append_metrics(run: Path, row: dict[str, Any]) -> None:
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def truncate_metrics(run: Path, step: int) -> None:
    """On resume, drop the rows of steps after the checkpoint (they will be redone)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return
    keep = [
        line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step
    ]
    path.write_text("".join(line + "\n" for line in keep))


def plot_loss(run: Path) -> Path | None:
    """loss.png: train loss per step and eval loss per eval, from metrics.jsonl."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
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
    fig.savefig(run / "loss.png", dpi=100)
    plt.close(fig)
    return run / "loss.png"


# ----------------------------------------------------------------------------------------- recipe


def train(cfg: TrainConfig) -> StageResult:
    """Fine-tune ``cfg.model`` on ``cfg.dataset`` with ``cfg.method``; writes a run folder."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    from codetune.modeling.loading import (
        is_seq2seq_config,
        load_config,
        load_model,
        load_tokenizer,
        resolve_model,
    )

    # --- setup: check every input before touching the output folder
    method = get_method(cfg.method)
    if cfg.dataset is None:
        raise ConfigError("train needs --dataset (a folder from `codetune build`)")
    out = default_out(cfg.out, None, "run")
    data, stats = read_dataset(Path(cfg.dataset))
    ref = resolve_model(cfg.model)
    seq2seq = is_seq2seq_config(load_config(ref.base))
    if stats["kind"] == "seq2seq" and not seq2seq:
        raise InputError(
            f"dataset {cfg.dataset} is seq2seq but {cfg.model} is a causal LM; use an encoder-decoder"
        )
    if stats["kind"] != "seq2seq" and seq2seq:
        raise InputError(
            f"dataset {cfg.dataset} is {stats['kind']} but {cfg.model} is encoder-decoder (seq2seq)"
        )
    quantization = quantization_config() if method.quantized else None
    for tracker in cfg.report_to:
        if importlib.util.find_spec(tracker) is None:
            raise ConfigError(f"report_to {tracker}: the package is not installed (pip install {tracker})")
    precision = mixed_precision(cfg, method)
    dataset_manifest = Path(cfg.dataset) / "manifest.json"
    run_print = run_fingerprint(cfg, read_json(dataset_manifest) if dataset_manifest.is_file() else stats)
    accelerator = Accelerator(
        mixed_precision=precision, log_with=cfg.report_to or None, project_dir=str(out / "logs")
    )
    main = accelerator.is_main_process
    status = check_out(out, run_print, cfg.resume)
    accelerator.wait_for_everyone()  # every process has looked at the folder before the first one writes
    if status == "done":
        return StageResult("train", out, read_json(out / "manifest.json").get("summary", {}), skipped=True)
    set_seed(cfg.seed)
    tok_dir = Path(cfg.dataset) / "tokenizer"
    tokenizer = (
        load_tokenizer(str(tok_dir)) if (tok_dir / "tokenizer_config.json").is_file() else load_tokenizer(ref)
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    model = load_model(ref, quantization_config=quantization)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))  # the dataset added tokens (FIM sentinels)
    model.config.use_cache = False
    choose_attention(model, cfg.attention, precision)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if method.peft:
            model.enable_input_require_grads()

    columns = ["input_ids", "labels"] if seq2seq else ["input_ids", "loss_mask"]
    columns = [c for c in columns if c in data["train"].column_names]
    batch_args = {
        "kind": "seq2seq" if seq2seq else "causal",
        "mode": cfg.packing,
        "batch_tokens": cfg.batch_tokens,
        "batch_size": cfg.batch_size,
        "pad_id": pad_id,
        "seed": cfg.seed,
        "completion_only": cfg.completion_only,
        "pack_length": cfg.pack_length,
    }
    train_batches = Batches(data["train"].select_columns(columns).to_list(), **batch_args)
    valid_batches = None
    if "valid" in data and len(data["valid"]) > 0:
        valid_batches = Batches(data["valid"].select_columns(columns).to_list(), **batch_args)

    # Each process takes every num_processes-th micro-batch; an optimizer step is grad_accum of them.
    per_process = len(train_batches.plan(0)) // accelerator.num_processes
    if per_process == 0:
        raise InputError(
            f"dataset {cfg.dataset} has too few examples for {accelerator.num_processes} processes"
        )
    steps_per_epoch = math.ceil(per_process / cfg.grad_accum)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))

    model = method.wrap(model, cfg, total_steps)
    table = parameter_table(model)
    if main:
        logger.info("parameters:\n%s", format_table(table))

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)
    is_adalora = cfg.method == "adalora"

    state = {
        "step": 0,
        "epoch": 0,
        "batch": 0,
        "tokens": 0,
        "best_eval": None,
        "best_step": None,
        "bad_evals": 0,
    }
    if status == "resume" and (checkpoint := latest_checkpoint(out)) is not None:
        state = load_checkpoint(checkpoint, inner, optimizer, scheduler)
        if main:
            truncate_metrics(out, state["step"])
        logger.info("resumed from %s (step %d)", checkpoint, state["step"])
    elif main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
        manifest = {
            "model": cfg.model,
            "method": cfg.method,
            "dataset": str(cfg.dataset),
            "kind": batch_args["kind"],
            "fingerprint": run_print,
            "finished": False,
            "config": cfg.model_dump(mode="json"),
        }
        write_json(out / "manifest.json", manifest)
        if tok_dir.is_dir():
            shutil.copytree(tok_dir, out / "tokenizer", dirs_exist_ok=True)
        else:
            tokenizer.save_pretrained(out / "tokenizer")
    if cfg.report_to:
        accelerator.init_trackers("codetune", config=cfg.model_dump(mode="json"))
    accelerator.wait_for_everyone()

    # --- train loop (a fresh run first measures the untrained model on valid: the curve's start)
    if valid_batches is not None and state["step"] == 0:
        eval_loss = evaluate(model, valid_batches, accelerator, seq2seq, cfg.eval_max_batches)
        if main:
            append_metrics(out, {"step": 0, "eval_loss": round(eval_loss, 6)})
    model.train()
    started = time.perf_counter()
    paused = 0.0  # seconds spent on evals and checkpoints, not counted in tokens/s
    start_tokens = state["tokens"]
    last_loss = float("nan")
    stop = False
    while state["step"] < total_steps and not stop:
        plan = train_batches.plan(state["epoch"])
        mine = plan[accelerator.process_index :: accelerator.num_processes][:per_process]
        while state["batch"] < len(mine) and state["step"] < total_steps:
            chosen = mine[state["batch"] : state["batch"] + cfg.grad_accum]
            window = [train_batches.collate(indices) for indices in chosen]
            state["tokens"] += sum(train_batches.tokens(indices) for indices in chosen)
            counts = torch.tensor([sum(target_count(b, seq2seq) for b in window)], device=accelerator.device)
            step_targets = max(int(accelerator.reduce(counts, reduction="sum")), 1)
            step_loss = 0.0
            for j, batch in enumerate(window):
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                sync = j == len(window) - 1
                with accelerator.no_sync(model) if not sync else contextlib.nullcontext():
                    with accelerator.autocast():
                        loss_sum, _ = forward_loss(model, batch, seq2seq)
                    # DDP averages gradients over processes: scale so the result is per target token.
                    loss = loss_sum * accelerator.num_processes / step_targets
                    if is_adalora:
                        loss = loss + inner.peft_config["default"].orth_reg_weight * adalora_orth_reg(
                            inner
                        ) / len(window)
                    accelerator.backward(loss)
                step_loss += float(loss_sum.detach())
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            state["step"] += 1
            if is_adalora:
                inner.base_model.update_and_allocate(state["step"])
            optimizer.zero_grad(set_to_none=True)
            state["batch"] += len(window)

            step = state["step"]
            total_loss = accelerator.reduce(
                torch.tensor([step_loss], device=accelerator.device), reduction="sum"
            )
            last_loss = float(total_loss) / step_targets
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
                eval_loss = evaluate(model, valid_batches, accelerator, seq2seq, cfg.eval_max_batches)
                paused += time.perf_counter() - eval_started
                if main:
                    append_metrics(out, {"step": step, "eval_loss": round(eval_loss, 6)})
                    if cfg.report_to:
                        accelerator.log({"eval/loss": eval_loss}, step=step)
                if state["best_eval"] is None or eval_loss < state["best_eval"]:
                    state.update(best_eval=eval_loss, best_step=step, bad_evals=0)
                    save_weights(out / "checkpoints" / "best", accelerator, model, tokenizer, method.peft)
                else:
                    state["bad_evals"] += 1
                    if cfg.early_stopping_patience and state["bad_evals"] >= cfg.early_stopping_patience:
                        logger.info(
                            "early stopping at step %d (best eval loss at step %s)", step, state["best_step"]
                        )
                        stop = True
                        break
            if step % cfg.save_every == 0 and step < total_steps:
                save_started = time.perf_counter()
                if main:
                    save_checkpoint(
                        out / "checkpoints" / f"step-{step:06d}", inner, optimizer, scheduler, state
                    )
                    prune_checkpoints(out)
                accelerator.wait_for_everyone()
                paused += time.perf_counter() - save_started
        else:
            state["epoch"] += 1
            state["batch"] = 0
    elapsed = time.perf_counter() - started - paused

    # --- save: the best weights by eval loss when there were evals, else the last ones
    accelerator.wait_for_everyone()
    summary: dict[str, Any] = {
        "steps": state["step"],
        "train_loss": round(last_loss, 4),
        "best_eval_loss": round(state["best_eval"], 4) if state["best_eval"] is not None else None,
        "best_step": state["best_step"],
        "tokens_per_s": round((state["tokens"] - start_tokens) / max(elapsed, 1e-9), 1),
        **table,
    }
    if is_adalora:
        ranks = adalora_ranks(inner)
        summary["adalora_rank_mean"] = round(sum(ranks.values()) / max(len(ranks), 1), 2)
        summary["adalora_rank_min"] = min(ranks.values(), default=0)
        summary["adalora_rank_max"] = max(ranks.values(), default=0)
    final = out / ("adapter" if method.peft else "model")
    best = out / "checkpoints" / "best"
    if state["best_step"] is None:
        save_weights(final, accelerator, model, tokenizer, method.peft)
    if main:
        if state["best_step"] is not None:
            with atomic_dir(final) as tmp:
                shutil.copytree(best, tmp, dirs_exist_ok=True)
        if is_adalora:
            write_json(out / "adalora_ranks.json", ranks)
            logger.info("AdaLoRA final ranks: %s", ranks)
        plot_loss(out)
        manifest = read_json(out / "manifest.json")
        manifest.update(finished=True, summary=summary, parameters=table)
        write_json(out / "manifest.json", manifest)
    if cfg.report_to:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return StageResult("train", out, summary)
