"""Tiny datasets in the `codetune build` layout, made directly from standard-library files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CAUSAL_PRESETS = ["tiny-gpt-bigcode", "tiny-starcoder2", "tiny-phi", "tiny-codegen", "tiny-llama"]
ALL_PRESETS = [*CAUSAL_PRESETS, "tiny-t5"]
_CHUNKS: dict[tuple, list[list[int]]] = {}


def stdlib_chunks(tokenizer, count: int, length: int) -> list[list[int]]:
    """``count`` pieces of real code of up to ``length`` tokens (varied lengths), EOS appended."""
    from codetune.modeling.presets import stdlib_dir

    key = (tokenizer.name_or_path, len(tokenizer), count, length)
    if key in _CHUNKS:
        return _CHUNKS[key]
    chunks: list[list[int]] = []
    _CHUNKS[key] = chunks
    # Top-level standard-library modules only: walking site-packages takes seconds.
    for path in sorted(stdlib_dir().glob("*.py")):
        ids = tokenizer(path.read_text(encoding="utf-8", errors="replace")[:20_000])["input_ids"]
        for start in range(0, len(ids) - length, length * 3):
            size = length - (len(chunks) * 7) % (length // 2)
            chunks.append([*ids[start : start + size - 1], tokenizer.eos_token_id])
            if len(chunks) == count:
                return chunks
    return chunks


def make_dataset(
    folder: Path,
    model: str = "tiny-gpt-bigcode",
    *,
    kind: str = "causal",
    train: int = 48,
    valid: int = 8,
    length: int = 48,
) -> Path:
    """Write a dataset folder (save_to_disk + stats.json + tokenizer/) like `codetune build` does."""
    from datasets import Dataset, DatasetDict

    from codetune.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer(model)
    chunks = stdlib_chunks(tokenizer, train + 2 * valid, length)
    splits = {}
    for name, part in (
        ("train", chunks[:train]),
        ("valid", chunks[train : train + valid]),
        ("test", chunks[train + valid :]),
    ):
        if kind == "seq2seq":
            rows = {
                "input_ids": [[*c[: len(c) // 2], tokenizer.eos_token_id] for c in part],
                "labels": [c[len(c) // 2 :] for c in part],
            }
        else:
            # prompt/completion style: the first quarter is prompt (not in the loss)
            rows = {
                "input_ids": part,
                "loss_mask": [[0] * (len(c) // 4) + [1] * (len(c) - len(c) // 4) for c in part],
            }
        splits[name] = Dataset.from_dict(rows)
    DatasetDict(splits).save_to_disk(str(folder))
    stats = {
        "format": "files",
        "kind": kind,
        "model": model,
        "max_length": length,
        "splits": {k: {"examples": len(v)} for k, v in splits.items()},
    }
    (folder / "stats.json").write_text(json.dumps(stats))
    tokenizer.save_pretrained(folder / "tokenizer")
    return folder


def dataset_for(preset: str, causal_dataset: Path, seq2seq_dataset: Path) -> Path:
    return seq2seq_dataset if preset == "tiny-t5" else causal_dataset


def launch_two_cpu_processes(args: list[str], timeout: int = 420) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file examples/accelerate/cpu-2proc.yaml -m codetune ARGS`: the
    two-CPU-process config users are pointed to, with no GPU visible; skips without accelerate."""
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not on PATH")
    config = Path(__file__).resolve().parents[2] / "examples" / "accelerate" / "cpu-2proc.yaml"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "-m",
        "codetune",
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    env |= {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done
