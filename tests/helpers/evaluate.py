"""A dataset folder in the build contract, for eval tests that need no real build."""

from __future__ import annotations

import json
from pathlib import Path

PY_FILES = [
    "\n".join(
        [
            f"def add_{i}(a, b):",
            "    total = a + b",
            f"    print('value {i}', total)",
            "    return total",
            "",
            f"x_{i} = add_{i}({i}, 2)",
            "",
        ]
    )
    for i in range(8)
]


def make_dataset(folder: Path) -> Path:
    """A `files`-format dataset folder as `codetune build` writes it (splits, stats, manifest, tokenizer)."""
    from datasets import Dataset, DatasetDict

    from codetune.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer("tiny-gpt-bigcode")

    def rows(texts: list[str]) -> Dataset:
        out = []
        for i, text in enumerate(texts):
            ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
            out.append(
                {
                    "path": f"pkg/m{i}.py",
                    "repo": "r",
                    "text": text,
                    "input_ids": ids,
                    "loss_mask": [1] * len(ids),
                }
            )
        return Dataset.from_list(out)

    DatasetDict(
        {"train": rows(PY_FILES[:6]), "valid": rows(PY_FILES[6:7]), "test": rows(PY_FILES[6:])}
    ).save_to_disk(str(folder))
    stats = {
        "format": "files",
        "kind": "causal",
        "model": "tiny-gpt-bigcode",
        "max_length": 256,
        "splits": {"test": {"examples": 2, "tokens": 0}},
    }
    (folder / "stats.json").write_text(json.dumps(stats))
    (folder / "manifest.json").write_text(json.dumps({"fingerprint": "test-dataset-hash"}))
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    return folder
