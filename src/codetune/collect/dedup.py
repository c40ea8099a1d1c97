"""Deduplication: exact (hash of whitespace-normalised content) and near (codetune.textsim)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np

from codetune import textsim


def exact_key(text: str) -> str:
    """sha256 of the content with all whitespace runs collapsed, so reformatting is a duplicate."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def minhash_values(text: str, num_perm: int = 256, ngram: int = 5) -> np.ndarray:
    """The MinHash signature a worker attaches to a kept file (see :func:`codetune.textsim.minhash`)."""
    return textsim.minhash(text, num_perm, ngram)


def near_duplicates(
    items: Iterable[tuple[Hashable, np.ndarray | bytes]],
    threshold: float = 0.7,
    num_perm: int = 256,
    text_of: Callable[[Hashable], str] | None = None,
    ngram: int = 5,
) -> dict[Any, Any]:
    """Map each near-duplicate key to the kept key it duplicates (first of a cluster kept).

    With ``text_of`` (key -> content) candidates are confirmed with their exact shingle Jaccard, so
    a file is only dropped when it really has a twin at >= ``threshold``; without it, with the
    signatures' estimate.
    """
    similarity = textsim.ShingleCache(text_of, ngram) if text_of is not None else None
    return textsim.near_duplicates(items, threshold, num_perm, similarity)
