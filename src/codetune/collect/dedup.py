"""Deduplication: exact (hash of whitespace-normalised content) and near (MinHash LSH, bigcode's values)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WS = re.compile(r"\s+")


def exact_key(text: str) -> str:
    """sha256 of the content with all whitespace runs collapsed, so reformatting is a duplicate."""
    return hashlib.sha256(_WS.sub(" ", text).strip().encode("utf-8")).hexdigest()


def shingles(text: str, ngram: int = 5) -> set[bytes]:
    """Set of ``ngram``-grams of identifier tokens (bigcode shingles identifiers, not characters)."""
    tokens = _IDENT.findall(text)
    if len(tokens) < ngram:
        return {" ".join(tokens).encode()} if tokens else set()
    return {" ".join(tokens[i : i + ngram]).encode() for i in range(len(tokens) - ngram + 1)}


def minhash_values(text: str, num_perm: int = 256, ngram: int = 5) -> np.ndarray:
    """MinHash signature (uint32 array) of a text's identifier shingles; deterministic across processes."""
    from datasketch import MinHash

    mh = MinHash(num_perm=num_perm, seed=1)
    grams = shingles(text, ngram)
    if grams:
        mh.update_batch(list(grams))
    return mh.hashvalues.astype(np.uint32)


def near_duplicates(
    items: Iterable[tuple[Any, np.ndarray]], threshold: float = 0.7, num_perm: int = 256
) -> dict[Any, Any]:
    """Map each near-duplicate key to the key it duplicates; the first item of a cluster (in the given
    order) is kept, so a sorted input gives a deterministic result."""
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    scheme = MinHash(num_perm=num_perm, seed=1).scheme
    kept: dict[Any, np.ndarray] = {}
    dupes: dict[Any, Any] = {}
    for key, values in items:
        sig = LeanMinHash(seed=1, hashvalues=values, scheme=scheme)
        match = None
        for candidate in sorted(lsh.query(sig), key=str):
            if float(np.mean(kept[candidate] == values)) >= threshold:  # confirm the LSH candidate
                match = candidate
                break
        if match is None:
            lsh.insert(key, sig)
            kept[key] = values
        else:
            dupes[key] = match
    return dupes
