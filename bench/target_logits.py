"""Training rows with few target tokens: the LM head run only where a target follows, against every
position projected (what training did before), on the same rows, model and steps.

Feedback rows learn one suggestion after a 256-token prompt; preference rows score only completions;
a model with a large vocabulary (Gemma 3 270M: 262,144 rows) spends most of such a step projecting
positions whose logits are thrown away. Both runs are codetune's own `train()`; the baseline patches
`codetune.modeling.logits.keeps_target_positions` to answer False, so every position is projected and
the targets' rows picked after (the same losses). Reported: seconds per step (model load included,
the same for both; the best of --repeats alternated runs), the last step's loss of each, and the
ratio.

    python bench/target_logits.py [--model tiny-gemma3 | --model DIR_OR_GGUF] [--dataset FEEDBACK_DATASET]
        [--method lora|kto|dpo] [--steps 6] [--batch-tokens 1024] [--precision fp32|bf16] [--repeats 2]

Without --dataset the rows are real code of the Python standard library: 240 prompt tokens with no
loss, then 16 target tokens (the shape of a feedback row).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path
from unittest import mock

from codetune.modeling.loading import load_tokenizer
from codetune.modeling.presets import stdlib_dir
from codetune.train.config import TrainConfig
from codetune.train.recipe import train

PROMPT, TARGET = 240, 16


def prompt_rows(model: str, folder: Path, count: int = 256) -> Path:
    """``count`` rows of standard-library code in the `codetune build` layout, loss on the last
    ``TARGET`` tokens only."""
    from datasets import Dataset, DatasetDict

    tokenizer = load_tokenizer(model)
    ids: list[list[int]] = []
    for path in sorted(stdlib_dir().glob("*.py")):
        text = re.sub(r"\n{3,}", "\n\n", path.read_text(encoding="utf-8", errors="replace"))
        tokens = tokenizer(text[:40_000])["input_ids"]
        ids += [tokens[i : i + PROMPT + TARGET] for i in range(0, len(tokens) - PROMPT - TARGET, PROMPT * 2)]
        if len(ids) >= count:
            break
    rows = {"input_ids": ids[:count], "loss_mask": [[0] * PROMPT + [1] * TARGET for _ in ids[:count]]}
    valid = {key: value[:8] for key, value in rows.items()}
    DatasetDict(
        {
            "train": Dataset.from_dict(rows),
            "valid": Dataset.from_dict(valid),
            "test": Dataset.from_dict(valid),
        }
    ).save_to_disk(str(folder))
    (folder / "stats.json").write_text(json.dumps({"format": "units", "kind": "causal", "max_length": 256}))
    tokenizer.save_pretrained(folder / "tokenizer")
    return folder


def timed(args: argparse.Namespace, dataset: Path, out: Path, every_position: bool) -> tuple[float, float]:
    """Seconds per step and the last step's loss of one codetune training run."""
    config = TrainConfig(
        model=args.model,
        dataset=dataset,
        method=args.method,
        out=out,
        max_steps=args.steps,
        batch_tokens=args.batch_tokens,
        pack_length=256,
        lr=1e-4,
        lora_r=16,
        lora_alpha=32,
        precision=args.precision,
        eval_every=10**6,
        save_every=args.steps,
        seed=0,
    )
    started = time.monotonic()
    if every_position:
        with mock.patch("codetune.modeling.logits.keeps_target_positions", return_value=False):
            train(config)
    else:
        train(config)
    seconds = (time.monotonic() - started) / args.steps
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [m["loss"] for m in metrics if "loss" in m and "step" in m]
    return seconds, losses[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-gemma3")
    parser.add_argument(
        "--dataset", help="A `build --format feedback` dataset (default: standard-library rows)."
    )
    parser.add_argument("--method", default="lora", choices=["lora", "kto", "dpo"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-tokens", type=int, default=1024)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=2, help="Runs of each, alternated (the best counts).")
    args = parser.parse_args()
    if args.method != "lora" and not args.dataset:
        parser.error(f"--method {args.method} needs --dataset (a `build --format feedback` dataset)")
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(args.dataset) if args.dataset else prompt_rows(args.model, Path(tmp) / "rows")
        name = dataset.name if args.dataset else f"standard library, {PROMPT} prompt + {TARGET} target tokens"
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for repeat in range(args.repeats):  # alternated; the best of each (the first run pays warm-up)
            for every_position in (False, True):
                out = Path(tmp) / f"run-{repeat}-{every_position}"
                runs[every_position].append(timed(args, dataset, out, every_position))
        kept, kept_loss = min(runs[False])
        full, full_loss = min(runs[True])
    print(
        f"model {args.model}; method {args.method}; {args.steps} steps of {args.batch_tokens} tokens; {name}"
    )
    print(f"every position projected:      {full:7.2f} s/step  last loss {full_loss:.4f}")
    print(f"target positions only (codetune): {kept:7.2f} s/step  last loss {kept_loss:.4f}")
    print(
        f"ratio: {full / kept:.2f}x seconds per step, every position vs target positions only ({args.method})"
    )


if __name__ == "__main__":
    main()
