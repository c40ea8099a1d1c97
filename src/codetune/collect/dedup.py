"""Deduplication: exact (hash of whitespace-normalised content) and near (MinHash LSH, bigcode's values)."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def exact_key(text: str) -> str:
    """sha256 of the content with all whitespace runs collapsed, so reformatting is a duplicate."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def shingle_hashes(text: str, ngram: int = 5) -> np.ndarray:
    """Distinct 32-bit hashes of the identifier ``ngram``-grams, computed with numpy (no per-shingle
    Python hashing): crc32 per distinct token, then a polynomial combination over each window."""
    tokens = _IDENT.findall(text)
    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    table = {token: zlib.crc32(token.encode()) for token in set(tokens)}
    ids = np.fromiter((table[t] for t in tokens), dtype=np.uint64, count=len(tokens))
    width = min(ngram, len(ids))
    windows = len(ids) - width + 1
    combined = np.zeros(windows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(width):
            combined = combined * np.uint64(0x100000001B3) + ids[k : k + windows]
        combined ^= combined >> np.uint64(29)
    return np.unique(combined & np.uint64(0xFFFFFFFF))


_PERMUTATIONS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """datasketch's permutations (a, b) and empty signature for ``num_perm``, built once per process."""
    if num_perm not in _PERMUTATIONS:
        from datasketch import MinHash

        template = MinHash(num_perm=num_perm, seed=1)
        a, b = template.permutations
        _PERMUTATIONS[num_perm] = (a, b, template.hashvalues.copy())
    return _PERMUTATIONS[num_perm]


def minhash_values(text: str, num_perm: int = 256, ngram: int = 5) -> np.ndarray:
    """MinHash signature (uint32) of a text's identifier shingles, equal to datasketch's
    ``MinHash(num_perm, seed=1, hashfunc=identity).update_batch(shingle_hashes)`` but computed in one
    numpy expression (no per-shingle Python calls); deterministic across processes."""
    from datasketch.minhash import _fmix

    a, b, empty = _permutations(num_perm)
    hashes = shingle_hashes(text, ngram).astype(a.dtype)
    if not len(hashes):
        return empty.astype(np.uint32)
    with np.errstate(over="ignore"):
        mixed = _fmix(hashes.reshape(-1, 1), 8 * a.dtype.itemsize)
        signature = np.minimum(empty, (mixed * a + b).min(axis=0))
    return signature.astype(np.uint32)


def near_duplicates(
    items: Iterable[tuple[Any, np.ndarray | bytes]], threshold: float = 0.7, num_perm: int = 256
) -> dict[Any, Any]:
    """Map each near-duplicate key to the key it duplicates; the first item of a cluster (in the given
    order) is kept, so a sorted input gives a deterministic result."""
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    scheme = MinHash(num_perm=num_perm, seed=1).scheme
    kept: dict[Any, np.ndarray] = {}
    dupes: dict[Any, Any] = {}
    for key, values in items:
        if isinstance(values, bytes):  # signatures travel between processes as bytes
            values = np.frombuffer(values, dtype=np.uint32)
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


def lsh_band_ranges(threshold: float = 0.7, num_perm: int = 256) -> list[tuple[int, int]]:
    """The (start, end) signature slices :func:`near_duplicates`' LSH hashes into bands; items sharing
    no band are never compared, which lets a distributed executor split the input into clusters."""
    from datasketch import MinHashLSH

    return [(int(lo), int(hi)) for lo, hi in MinHashLSH(threshold=threshold, num_perm=num_perm).hashranges]
