"""vLLM engine vs HF engine: the same greedy requests through both, identical texts and tokens/s.

Both sides are codetune's own paths: the requests come from the one request builder (plain prompts
and FIM prompts with a suffix, trimmed to the model's context, post-processed), the HF side is the
continuous-batching engine `codetune generate` and `codetune serve` run, the vLLM side is the
``VllmEngine`` that `codetune generate --engine vllm` loads (after the same refusals). The HF model
is loaded in the checkpoint's dtype, which is what vLLM's ``dtype="auto"`` picks, so greedy texts
can match token for token. Run:

    python bench/vllm_engine.py MODEL_DIR            # a merged model or any causal checkpoint
    python bench/vllm_engine.py MODEL_DIR --prompts 32 --max-tokens 64 --json out.json

It needs CUDA and vllm; without either it prints why in one line and exits 0. `bench/gpu_check.py`
runs it in a child process on its merged model (vLLM takes most of the GPU's memory).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

# Why a child process: vLLM's engine core runs in its own process, started with spawn once CUDA is
# initialised here (the HF side runs first); saying so up front avoids vLLM's fork warning.
os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")


def greedy_prompts(count: int) -> list[tuple[str, str | None]]:
    """(prefix, suffix) pairs: every other one a FIM prompt (a suffix), the rest plain completions."""
    prompts: list[tuple[str, str | None]] = []
    for index in range(count):
        if index % 2:
            prompts.append((f"def scale_{index}(values, factor):\n    ", "\n    return result\n"))
        else:
            prompts.append((f"def function_{index}(x):\n", None))
    return prompts


def skip_reason() -> str | None:
    """Why this machine cannot run the comparison, or None."""
    if importlib.util.find_spec("vllm") is None:
        return "skipped (not installed)"
    import torch

    if not torch.cuda.is_available():
        return "skipped (no CUDA device)"
    return None


def build_requests(
    tokenizer: Any, prompts: list[tuple[str, str | None]], params: Any, context: int | None
) -> list:
    from codetune.generation.request import build_request

    return [
        build_request(tokenizer, prefix, suffix, params, context=context, language="python")
        for prefix, suffix in prompts
    ]


def timed(engine: Any, tokenizer: Any, prompts: list, params: Any, context: int | None) -> dict:
    """Texts (in prompt order), new tokens and seconds of one pass, after a one-prompt warm-up."""
    from codetune.generation.generator import complete_requests

    list(complete_requests(engine, build_requests(tokenizer, prompts[:1], params, context)))
    requests = build_requests(tokenizer, prompts, params, context)
    texts: list[str] = [""] * len(prompts)
    tokens = 0
    started = time.perf_counter()
    for index, completions in complete_requests(engine, requests):
        texts[index] = completions[0].text
        tokens += sum(len(c.token_ids) for c in completions)
    seconds = time.perf_counter() - started
    return {"texts": texts, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def compare(model: str, prompt_count: int, max_tokens: int) -> dict:
    """Run the prompts greedily through the HF engine, free the GPU, then through the vLLM engine."""
    import torch

    from codetune.generation.engines import engine_for, load_engine
    from codetune.generation.engines.vllm import check_vllm_model, check_vllm_params, vllm_context
    from codetune.generation.params import SamplingParams
    from codetune.modeling.loading import load_model, load_tokenizer, resolve_model
    from codetune.train.merge import checkpoint_dtype

    ref = resolve_model(model)
    check_vllm_model(ref)
    params = SamplingParams(max_new_tokens=max_tokens, temperature=0.0)
    check_vllm_params(params)
    tokenizer = load_tokenizer(ref)
    context = vllm_context(ref)
    prompts = greedy_prompts(prompt_count)
    dtype = checkpoint_dtype(ref.base)

    hf_model = load_model(ref, device="cuda", dtype=dtype)
    hf = timed(
        engine_for(hf_model, tokenizer, max_batch_size=prompt_count), tokenizer, prompts, params, context
    )
    del hf_model
    gc.collect()
    torch.cuda.empty_cache()

    started = time.perf_counter()
    engine = load_engine("vllm", ref, tokenizer, max_batch_size=prompt_count)
    engine.start()
    load_s = time.perf_counter() - started
    model_config = getattr(getattr(engine.llm, "llm_engine", None), "model_config", None)
    vllm_dtype = str(getattr(model_config, "dtype", "?")).removeprefix("torch.")
    served = timed(engine, tokenizer, prompts, params, context)

    equal = [a == b for a, b in zip(hf["texts"], served["texts"], strict=True)]
    first_diff = next((i for i, same in enumerate(equal) if not same), None)
    return {
        "prompts": len(prompts),
        "fim_prompts": sum(suffix is not None for _, suffix in prompts),
        "max_tokens": max_tokens,
        "identical": sum(equal),
        "hf_dtype": str(dtype).removeprefix("torch."),
        "vllm_dtype": vllm_dtype,
        "hf_tokens_per_s": hf["tokens_per_s"],
        "vllm_tokens_per_s": served["tokens_per_s"],
        "hf_tokens": hf["tokens"],
        "vllm_tokens": served["tokens"],
        "vllm_load_s": load_s,
        "first_difference": None
        if first_diff is None
        else {
            "prompt": prompts[first_diff],
            "hf": hf["texts"][first_diff],
            "vllm": served["texts"][first_diff],
        },
    }


def summary_line(result: dict) -> str:
    """The one line gpu_check's table shows."""
    return (
        f"vllm: {result['identical']}/{result['prompts']} greedy texts identical to the HF engine "
        f"({result['fim_prompts']} FIM; {result['hf_dtype']} / {result['vllm_dtype']}); tokens/s vLLM "
        f"{result['vllm_tokens_per_s']:.0f} vs HF {result['hf_tokens_per_s']:.0f} "
        f"({result['vllm_tokens_per_s'] / result['hf_tokens_per_s']:.2f}x); vLLM start {result['vllm_load_s']:.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model folder, hub id or preset (a causal LM)")
    parser.add_argument("--prompts", type=int, default=16, help="greedy prompts, half of them FIM")
    parser.add_argument("--max-tokens", type=int, default=32, help="new tokens per prompt")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    reason = skip_reason()
    if reason is not None:
        print(f"vllm: {reason}")
        if args.json:
            args.json.write_text(json.dumps({"skipped": reason}))
        return
    result = compare(args.model, args.prompts, args.max_tokens)
    if args.json:
        args.json.write_text(json.dumps(result))
    if result["first_difference"]:
        print(f"first difference: {json.dumps(result['first_difference'])}")
    print(summary_line(result))
    print(
        f"ratio: {result['vllm_tokens_per_s'] / result['hf_tokens_per_s']:.2f}x new tokens/s, codetune vLLM "
        f"engine vs HF continuous engine, {result['prompts']} greedy prompts of {result['max_tokens']} tokens"
    )


if __name__ == "__main__":
    main()
