"""Train/valid/test splits by repository (or by file), never by example, so no text leaks across."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from typing import Any

SPLITS = ("train", "valid", "test")


def group_key(doc: dict[str, Any], by: str) -> str:
    """The unit a split keeps together: the repository, or the file."""
    return str(doc.get("repo") or "") if by == "repo" else f"{doc.get('repo') or ''}::{doc['path']}"


def resolve_split_by(docs: list[dict[str, Any]], split_by: str) -> str:
    """``auto``: by repository when there are at least three and none holds half the files, else by file."""
    if split_by != "auto":
        return split_by
    sizes = Counter(doc.get("repo") or "" for doc in docs)
    return "repo" if len(sizes) >= 3 and max(sizes.values()) < len(docs) / 2 else "file"


def assign_splits(
    docs: list[dict[str, Any]], valid_fraction: float, test_fraction: float, seed: int, by: str
) -> list[str]:
    """The split of each document: whole groups are shuffled (seeded) and dealt out by size."""
    sizes = Counter(group_key(doc, by) for doc in docs)
    # Sorting by a seeded hash (not Python's hash()) keeps the assignment stable across processes.
    groups = sorted(sizes, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    random.Random(seed).shuffle(groups)
    total = sum(sizes.values())
    targets = {"test": test_fraction * total, "valid": valid_fraction * total}
    where: dict[str, str] = {}
    filled = {"test": 0, "valid": 0}
    for index, group in enumerate(groups):
        remaining = len(groups) - index
        choice = "train"
        for split in ("test", "valid"):
            # The first group always goes in (so a small split is not left empty) unless it is huge.
            first = filled[split] == 0 and sizes[group] <= max(2 * targets[split], total / 3)
            wanted = targets[split] > 0 and (first or filled[split] + sizes[group] / 2 <= targets[split])
            # Always keep at least one group for train.
            if wanted and filled[split] < targets[split] and remaining > 1:
                choice = split
                break
        if choice != "train":
            filled[choice] += sizes[group]
        where[group] = choice
    if len(groups) >= 1 and all(v != "train" for v in where.values()):
        where[groups[-1]] = "train"
    return [where[group_key(doc, by)] for doc in docs]
