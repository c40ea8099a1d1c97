"""GPU check: codetune's training, merge and serving at real size, against HF Trainer + peft and TRL.

Meant for one H200 (under 8 minutes) where there is no hub: a starcoder2-3b-shaped model with random
weights (bf16), random token documents of varied length, then

* codetune LoRA bf16, packed (sdpa; flash-attention 2 too when ``flash_attn`` imports),
* codetune QLoRA (NF4) when ``bitsandbytes`` imports,
* HF Trainer + peft LoRA, every document padded to the same length (the straw man),
* TRL SFTTrainer, packing=bfd + padding-free, when ``trl`` imports,

each for the same steps and token budget, reporting non-pad tokens/s and peak GPU memory; then it
merges codetune's LoRA run (the fp32 merge check) and serves the merged model, timing a few
greedy completion requests (plain and FIM) through ``codetune serve``; when ``vllm`` imports it runs
the same kind of greedy prompts through codetune's vLLM engine and its HF engine on the merged model
(``bench/vllm_engine.py``, in a child process) and reports identical texts and tokens/s. It prints a
table and the ratios; the last line is codetune (sdpa) vs HF Trainer padded.

    python bench/gpu_check.py                       # on the GPU machine
    python bench/gpu_check.py --tiny --device cpu   # a tiny shape end to end (what CI could run)

Without CUDA (and without --device cpu) it prints why and exits 0: CI never runs it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bigcode/starcoder2-3b config.json, revision 733247c55e3f73af49ce8e9c7949bf14af205928
# (https://huggingface.co/bigcode/starcoder2-3b/blob/733247c55e3f73af49ce8e9c7949bf14af205928/config.json),
# as copied verbatim in AshishKumar4/dew tests/fixtures/hf/starcoder2-3b/config.json.
STARCODER2_3B = {
    "architectures": ["Starcoder2ForCausalLM"],
    "attention_dropout": 0.1,
    "residual_dropout": 0.1,
    "embedding_dropout": 0.1,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_size": 3072,
    "initializer_range": 0.018042,
    "intermediate_size": 12288,
    "max_position_embeddings": 16384,
    "mlp_type": "default",
    "model_type": "starcoder2",
    "norm_epsilon": 1e-05,
    "norm_type": "layer_norm",
    "num_attention_heads": 24,
    "num_hidden_layers": 30,
    "num_key_value_heads": 2,
    "rope_theta": 999999.4420358813,
    "sliding_window": 4096,
    "use_bias": True,
    "use_cache": True,
    "vocab_size": 49152,
}
# The same family shrunk for --tiny (shapes only; every other value as above).
TINY = {"hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4, "num_hidden_layers": 2}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny starcoder2 shape (runs on CPU)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    parser.add_argument("--seq", type=int, default=None, help="longest document / packed row length")
    parser.add_argument("--rows", type=int, default=None, help="rows of --seq tokens per micro-batch")
    parser.add_argument("--requests", type=int, default=4, help="completion requests to the served model")
    parser.add_argument("--vllm-prompts", type=int, default=16, help="greedy prompts for vLLM vs HF engine")
    parser.add_argument("--vllm-tokens", type=int, default=32, help="new tokens per vLLM/HF engine prompt")
    parser.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    args = parser.parse_args()
    args.steps = args.steps or (3 if args.tiny else 12)
    args.seq = args.seq or (128 if args.tiny else 2048)
    args.rows = args.rows or (4 if args.tiny else 8)
    return args


# ------------------------------------------------------------------------------------------ inputs


def write_model(folder: Path, tiny: bool, device: str) -> Path:
    """A starcoder2-3b-shaped model with random weights, saved with the tiny preset's tokenizer."""
    import torch
    from transformers import Starcoder2Config, Starcoder2ForCausalLM

    from codetune.modeling.loading import load_tokenizer

    config = Starcoder2Config(**{**STARCODER2_3B, **(TINY if tiny else {})})
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = Starcoder2ForCausalLM(config).to(dtype)
    model.save_pretrained(folder)
    load_tokenizer("tiny-starcoder2").save_pretrained(folder)
    del model
    return folder


def write_dataset(folder: Path, tokenizer: Any, seq: int, documents: int) -> Path:
    """Random-token documents of 1/8 to all of ``seq`` tokens (EOS last), in the `codetune build` layout."""
    import random

    from datasets import Dataset, DatasetDict

    rng = random.Random(0)
    vocab = len(tokenizer)

    def rows(count: int) -> dict[str, list]:
        ids = []
        for _ in range(count):
            length = rng.randint(max(seq // 8, 2), seq)
            ids.append([rng.randrange(3, vocab) for _ in range(length - 1)] + [tokenizer.eos_token_id])
        return {"input_ids": ids, "loss_mask": [[1] * len(i) for i in ids]}

    DatasetDict(
        {"train": Dataset.from_dict(rows(documents)), "valid": Dataset.from_dict(rows(8))}
    ).save_to_disk(str(folder))
    (folder / "stats.json").write_text(json.dumps({"format": "files", "kind": "causal", "max_length": seq}))
    tokenizer.save_pretrained(folder / "tokenizer")
    return folder


# -------------------------------------------------------------------------------------------- runs


class Peak:
    """Peak GPU memory of the block (GiB); 0 on CPU."""

    def __enter__(self) -> Peak:
        import torch

        self.gib = 0.0
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if torch.cuda.is_available():
            self.gib = torch.cuda.max_memory_allocated() / 2**30


def codetune_run(model: Path, dataset: Path, out: Path, args: argparse.Namespace, **settings: Any) -> dict:
    from codetune.train.config import TrainConfig
    from codetune.train.recipe import train

    cfg = TrainConfig(
        model=str(model),
        dataset=dataset,
        out=out,
        max_steps=args.steps,
        batch_tokens=args.rows * args.seq,
        pack_length=args.seq,
        lr=2e-4,
        warmup_ratio=0.0,
        eval_every=10**6,
        save_every=10**6,
        completion_only=False,
        precision="bf16" if args.device == "cuda" else "fp32",
        **settings,
    )
    with Peak() as peak:
        summary = train(cfg).summary
    return {"tokens_per_s": summary["tokens_per_s"], "peak_gib": peak.gib, "run": out}


def peft_lora(model: Any) -> Any:
    from peft import LoraConfig

    from codetune.train.targets import target_modules

    return LoraConfig(r=16, lora_alpha=32, target_modules=target_modules(model), task_type="CAUSAL_LM")


def hf_trainer_padded(model_dir: Path, dataset: Path, out: Path, args: argparse.Namespace) -> dict:
    """HF Trainer + peft LoRA, every document padded to --seq tokens, --rows documents a micro-batch."""
    from datasets import load_from_disk
    from peft import get_peft_model
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from train_throughput import prepared

    tokenizer, model = prepared(str(model_dir), device=args.device)
    model = get_peft_model(model, peft_lora(model))
    rows = load_from_disk(str(dataset))["train"].select_columns(["input_ids"])
    rows = rows.map(lambda row: tokenizer.pad(row, padding="max_length", max_length=args.seq))
    training = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=args.rows,
        max_steps=args.steps,
        learning_rate=2e-4,
        lr_scheduler_type="cosine",
        bf16=args.device == "cuda",
        save_strategy="no",
        logging_steps=10**6,
        report_to="none",
        use_cpu=args.device == "cpu",
        disable_tqdm=True,
        seed=0,
    )
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
    trainer = Trainer(model=model, args=training, train_dataset=rows, data_collator=collator)
    return measured(trainer)


def trl_packed(model_dir: Path, dataset: Path, out: Path, args: argparse.Namespace) -> dict:
    """TRL SFTTrainer: the same documents packed best-fit decreasing into --rows x --seq, padding-free."""
    import torch

    from train_throughput import trl_sft

    with Peak() as peak:
        tokens_per_s, model = trl_sft(
            str(model_dir),
            dataset,
            args.steps,
            out,
            max_length=args.seq,
            batch=args.rows,
            lr=2e-4,
            peft_for=peft_lora,
            device=args.device,
        )
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"tokens_per_s": tokens_per_s, "peak_gib": peak.gib}


def measured(trainer: Any) -> dict:
    """Train; non-pad tokens/s and peak GPU memory, then free the GPU for the next run."""
    import torch

    from train_throughput import timed_train

    with Peak() as peak:
        tokens_per_s = timed_train(trainer)
    trainer.model = trainer.model_wrapped = None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"tokens_per_s": tokens_per_s, "peak_gib": peak.gib}


# ------------------------------------------------------------------------------------ merge, serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_requests(model: Path, args: argparse.Namespace) -> dict:
    """Start `codetune serve` on the merged model and time --requests greedy completions (16 new tokens
    each), plain and FIM, the first of the prompts the vLLM comparison uses."""
    import httpx

    from vllm_engine import greedy_prompts

    port = free_port()
    env = {**os.environ}
    cmd = [sys.executable, "-m", "codetune", "serve", "-m", str(model), "--port", str(port)]
    cmd += ["--set", f"device={args.device}"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"codetune serve exited: {server.stderr.read().decode()[-1500:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("codetune serve did not come up in 300 s")
            time.sleep(1)
        latencies, tokens = [], 0
        for prefix, suffix in greedy_prompts(args.requests):
            body = {"model": "codetune", "prompt": prefix, "max_tokens": 16, "temperature": 0}
            if suffix is not None:
                body["suffix"] = suffix
            started = time.perf_counter()
            reply = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
            latencies.append(time.perf_counter() - started)
            reply.raise_for_status()
            tokens += int(reply.json().get("usage", {}).get("completion_tokens", 0))
        return {
            "requests": len(latencies),
            "mean_latency_s": sum(latencies) / len(latencies),
            "tokens": tokens,
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def vllm_vs_hf(model: Path, args: argparse.Namespace) -> str:
    """One line: the merged model through codetune's vLLM and HF engines (bench/vllm_engine.py, in a
    child process so that vLLM gets the GPU this process trained on), or why it was skipped."""
    import gc

    import torch

    from vllm_engine import skip_reason, summary_line

    reason = skip_reason()  # --device cpu has hidden CUDA from this process and its children
    if reason is not None:
        return f"vllm: {reason}"
    gc.collect()
    torch.cuda.empty_cache()
    out = model.parent / "vllm.json"
    script = Path(__file__).with_name("vllm_engine.py")
    cmd = [sys.executable, str(script), str(model), "--json", str(out)]
    cmd += ["--prompts", str(args.vllm_prompts), "--max-tokens", str(args.vllm_tokens)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=360)
    except subprocess.TimeoutExpired:
        return "vllm: failed (no result in 360 s)"
    if done.returncode != 0 or not out.is_file():
        lines = done.stderr.strip().splitlines() or ["no output"]
        last = next((line for line in reversed(lines) if "Error" in line), lines[-1])  # the cause
        return f"vllm: failed (exit {done.returncode}): {last[:300]}"
    result = json.loads(out.read_text())
    return f"vllm: {result['skipped']}" if "skipped" in result else summary_line(result)


# -------------------------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: skipped: no CUDA device here (run it on a GPU machine, or try --tiny --device cpu)")
        return
    from codetune.modeling.loading import load_tokenizer
    from codetune.train.config import MergeConfig
    from codetune.train.merge import merge

    started = time.perf_counter()
    work = args.keep or Path(tempfile.mkdtemp(prefix="codetune-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    try:
        model = write_model(work / "model", args.tiny, args.device)
        tokens_needed = args.steps * args.rows * args.seq
        dataset = write_dataset(
            work / "dataset", load_tokenizer(str(model)), args.seq, tokens_needed * 4 // args.seq
        )
        shape = "tiny starcoder2" if args.tiny else "starcoder2-3b shape"
        print(
            f"{shape}, random weights; {args.steps} steps of {args.rows} x {args.seq} tokens on {args.device}"
        )

        results["codetune LoRA packed (sdpa)"] = codetune_run(
            model, dataset, work / "run-sdpa", args, method="lora", attention="sdpa"
        )
        if args.device == "cuda" and importlib.util.find_spec("flash_attn"):
            results["codetune LoRA packed (flash-attn 2)"] = codetune_run(
                model, dataset, work / "run-flash", args, method="lora", attention="flash_attention_2"
            )
        if args.device == "cuda" and importlib.util.find_spec("bitsandbytes"):
            results["codetune QLoRA packed (sdpa)"] = codetune_run(
                model, dataset, work / "run-qlora", args, method="qlora", attention="sdpa"
            )
        results[f"HF Trainer + peft, padded to {args.seq}"] = hf_trainer_padded(
            model, dataset, work / "hf", args
        )
        if importlib.util.find_spec("trl"):
            results["TRL SFTTrainer (packing=bfd, padding_free)"] = trl_packed(
                model, dataset, work / "trl", args
            )

        merged = merge(MergeConfig(run=results["codetune LoRA packed (sdpa)"]["run"], out=work / "merged"))
        served = serve_requests(work / "merged", args)
        engines = vllm_vs_hf(work / "merged", args)

        print()
        print(f"{'run':46} {'non-pad tokens/s':>17} {'peak GiB':>9}")
        for name, row in results.items():
            print(f"{name:46} {row['tokens_per_s']:17.0f} {row['peak_gib']:9.2f}")
        print(
            f"merge: max |logit difference| {merged.summary['max_logit_diff']:.2e} (fp32 check), "
            f"saved {merged.summary['dtype']}"
        )
        print(
            f"serve: {served['requests']} requests, {served['tokens']} tokens, "
            f"mean latency {served['mean_latency_s']:.2f} s"
        )
        print(engines)
        ours = results["codetune LoRA packed (sdpa)"]["tokens_per_s"]
        padded = results[f"HF Trainer + peft, padded to {args.seq}"]["tokens_per_s"]
        for name, row in results.items():
            if not name.startswith("codetune LoRA packed (sdpa)"):
                print(f"codetune LoRA packed (sdpa) vs {name}: {ours / row['tokens_per_s']:.2f}x tokens/s")
        print(f"total: {time.perf_counter() - started:.0f} s")
        print(
            f"ratio: {ours / padded:.2f}x non-pad tokens/s, codetune LoRA packed vs HF Trainer + peft padded to {args.seq}"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
