"""Batch generation: codetune's length-sorted, token-budgeted batches vs fixed-order batches.

Run: python bench/generate.py [--prompts 96] [--max-new-tokens 16] [--model tiny-gpt-bigcode]

Both sides use the same model, prompts (lengths from a few tokens to a few hundred, in file
order, as in a real prompts file) and greedy decoding with the KV cache. The baseline runs
batches of --batch-size rows in file order, padded to each batch's longest prompt and run until
its longest row ends; codetune sorts by length and sizes batches by a token budget.
"""

from __future__ import annotations

import argparse
import random
import time


def make_prompts(count: int, seed: int = 0) -> list[str]:
    from codetune.modeling.presets import stdlib_texts

    rng = random.Random(seed)
    source = "".join(text for _, text in zip(range(40), stdlib_texts()))
    prompts = []
    for _ in range(count):
        # Most prompts short, a few long: the mix a prompts file usually has.
        size = int(rng.choice([40, 60, 80, 120, 160, 240]) if rng.random() < 0.8 else rng.randint(1200, 2400))
        start = rng.randint(0, len(source) - size - 1)
        prompts.append(source[start : start + size])
    return prompts


def fixed_order(model, tokenizer, prompts, max_new_tokens, batch_size):
    """The usual loop: consecutive slices, left-padded, one model.generate per slice."""
    import torch

    outputs = []
    pad = tokenizer.pad_token_id
    for start in range(0, len(prompts), batch_size):
        rows = [
            tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[start : start + batch_size]
        ]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        outputs.extend(tokenizer.batch_decode(out[:, width:], skip_special_tokens=True))
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-gpt-bigcode")
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--token-budget", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from codetune.generation.api import generate_completions
    from codetune.generation.params import SamplingParams
    from codetune.modeling.loading import load_model, load_tokenizer

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model), load_tokenizer(args.model)
    prompts = make_prompts(args.prompts)
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    print(
        f"{len(prompts)} prompts, {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f})"
    )
    fixed_order(model, tokenizer, prompts[:2], 2, 2)  # warm-up

    start = time.perf_counter()
    baseline = fixed_order(model, tokenizer, prompts, args.max_new_tokens, args.batch_size)
    base_s = time.perf_counter() - start

    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    start = time.perf_counter()
    results = dict(
        generate_completions(
            model,
            tokenizer,
            prompts,
            params,
            batch_size=max(args.batch_size * 8, 64),
            token_budget=args.token_budget,
        )
    )
    ours_s = time.perf_counter() - start
    ours = [results[i][0].text for i in range(len(prompts))]
    same = sum(a == b for a, b in zip(ours, baseline))

    base_rate, ours_rate = len(prompts) / base_s, len(prompts) / ours_s
    print(f"fixed-order batches of {args.batch_size}: {base_s:6.2f}s  {base_rate:7.2f} sequences/s")
    print(f"codetune (sorted, budget {args.token_budget}): {ours_s:6.2f}s  {ours_rate:7.2f} sequences/s")
    print(f"identical outputs: {same}/{len(prompts)} (padding changes float rounding, rarely the argmax)")
    print(
        f"ratio: {ours_rate / base_rate:.2f}x sequences/s, codetune length-sorted token-budget batches vs fixed-order batches"
    )


if __name__ == "__main__":
    main()
