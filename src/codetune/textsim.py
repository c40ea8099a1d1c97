"""Text similarity without a tokenizer: word shingles, MinHash signatures and an LSH index.

One module for every "is this text nearly that text" question: collect's near-duplicate removal and
build's decontamination of test against train both use it, so a pair found similar in one stage is
found similar in the other.

- Shingles are the distinct ``ngram``-grams of word tokens (``\\w+``, bigcode's choice: punctuation
  and layout do not count), hashed to 64 bits with numpy (crc32 per distinct token, then a
  polynomial over each window; no per-shingle Python hashing).
- A signature is ``num_perm`` MinHash values: the MurmurHash3 finaliser, then ``num_perm`` random
  multiply-add permutations mod 2^64 keeping the high 32 bits (a multiply-shift universal family).
- The LSH index is tuned *below* the threshold (see :func:`lsh_params`) so a pair at the threshold
  is a candidate with probability >= ``recall``; a candidate only counts once its Jaccard (exact on
  the shingles when the caller can give them, else estimated from the signatures) reaches the
  threshold. bigcode's plain banding (b=25, r=10) finds a pair at J=0.75 only ~77% of the time.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np

WORD = re.compile(r"\w+")
_EMPTY = np.zeros(0, dtype=np.uint64)


def words(text: str) -> list[str]:
    """The word tokens shingles are made of."""
    return WORD.findall(text)


def shingles(text: str, ngram: int = 5) -> np.ndarray:
    """Sorted distinct 64-bit hashes of the word ``ngram``-grams (one shingle for shorter texts)."""
    tokens = words(text)
    if not tokens:
        return _EMPTY
    table = {token: zlib.crc32(token.encode("utf-8")) for token in set(tokens)}
    ids = np.fromiter((table[t] for t in tokens), dtype=np.uint64, count=len(tokens))
    width = min(ngram, len(ids))
    windows = len(ids) - width + 1
    combined = np.zeros(windows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(width):
            combined = combined * np.uint64(0x100000001B3) + ids[k : k + windows]
    return np.unique(combined)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two shingle arrays from :func:`shingles`."""
    if not len(a) and not len(b):
        return 1.0
    common = len(np.intersect1d(a, b, assume_unique=True))
    return common / (len(a) + len(b) - common)


def text_jaccard(a: str, b: str, ngram: int = 5) -> float:
    """Exact Jaccard similarity of two texts' shingles."""
    return jaccard(shingles(a, ngram), shingles(b, ngram))


@functools.lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def _fmix64(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        values = values ^ (values >> np.uint64(33))
        values = values * np.uint64(0xFF51AFD7ED558CCD)
        values = values ^ (values >> np.uint64(33))
        values = values * np.uint64(0xC4CEB9FE1A85EC53)
        return values ^ (values >> np.uint64(33))


def signature(hashes: np.ndarray, num_perm: int = 256, seed: int = 1) -> np.ndarray:
    """MinHash signature (``num_perm`` uint32 values) of a shingle array; all-max for no shingles."""
    if not len(hashes):
        return np.full(num_perm, 0xFFFFFFFF, dtype=np.uint32)
    a, b = _permutations(num_perm, seed)
    mixed = _fmix64(hashes.astype(np.uint64)).reshape(-1, 1)
    out = np.empty(num_perm, dtype=np.uint32)
    step = max(1, 1 << 20 >> max(num_perm.bit_length(), 1))  # bound the (rows x num_perm) temporary
    best = None
    with np.errstate(over="ignore"):
        for start in range(0, len(mixed), step):
            block = ((mixed[start : start + step] * a + b) >> np.uint64(32)).min(axis=0)
            best = block if best is None else np.minimum(best, block)
    out[:] = best
    return out


def minhash(text: str, num_perm: int = 256, ngram: int = 5, seed: int = 1) -> np.ndarray:
    """MinHash signature of a text's shingles."""
    return signature(shingles(text, ngram), num_perm, seed)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity estimated from two signatures."""
    return float(np.count_nonzero(a == b)) / len(a)


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that a pair of this Jaccard similarity shares at least one LSH band."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def lsh_params(num_perm: int, threshold: float, recall: float = 0.995) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest chance candidates) that still make a pair at
    ``threshold`` a candidate with probability >= ``recall``; one row per band when none does."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if candidate_probability(threshold, bands, rows) >= recall:
            best = (bands, rows)
    return best


class LSHIndex:
    """Banded MinHash index: insert signatures, ask for keys that share a band with a signature."""

    def __init__(self, num_perm: int, threshold: float, recall: float = 0.995) -> None:
        self.num_perm = num_perm
        self.bands, self.rows = lsh_params(num_perm, threshold, recall)
        self._tables: list[dict[bytes, list[Hashable]]] = [{} for _ in range(self.bands)]

    def _keys(self, sig: np.ndarray) -> list[bytes]:
        if len(sig) != self.num_perm:
            raise ValueError(f"signature has {len(sig)} values, the index {self.num_perm}")
        r = self.rows
        raw = np.ascontiguousarray(sig, dtype=np.uint32).tobytes()
        return [raw[4 * r * i : 4 * r * (i + 1)] for i in range(self.bands)]

    def insert(self, key: Hashable, sig: np.ndarray) -> None:
        for table, band in zip(self._tables, self._keys(sig), strict=True):
            table.setdefault(band, []).append(key)

    def candidates(self, sig: np.ndarray) -> list[Hashable]:
        """Keys sharing at least one band, in insertion order, each once."""
        found: dict[Hashable, None] = {}
        for table, band in zip(self._tables, self._keys(sig), strict=True):
            for key in table.get(band, ()):
                found[key] = None
        return list(found)


def as_signature(values: np.ndarray | bytes) -> np.ndarray:
    """A signature from an array or the bytes it travelled as between processes."""
    return np.frombuffer(values, dtype=np.uint32) if isinstance(values, bytes) else values


def near_duplicates(
    items: Iterable[tuple[Hashable, np.ndarray | bytes]],
    threshold: float = 0.7,
    num_perm: int = 256,
    similarity: Callable[[Hashable, Hashable], float] | None = None,
) -> dict[Any, Any]:
    """Map each near-duplicate key to the earlier kept key it duplicates.

    Items are taken in order; one is a duplicate when some kept item is an LSH candidate and their
    ``similarity`` (default: estimated from the signatures; pass an exact one where shingles are at
    hand) is >= ``threshold``. The first of a cluster is kept, so sorted input gives a fixed result.
    """
    index = LSHIndex(num_perm, threshold)
    kept: dict[Hashable, np.ndarray] = {}
    dupes: dict[Any, Any] = {}
    for key, values in items:
        sig = as_signature(values)
        match = None
        for candidate in index.candidates(sig):
            score = similarity(key, candidate) if similarity else estimated_jaccard(sig, kept[candidate])
            if score >= threshold:
                match = candidate
                break
        if match is None:
            index.insert(key, sig)
            kept[key] = sig
        else:
            dupes[key] = match
    return dupes


class ShingleCache:
    """Exact similarity between texts looked up by key, computing each text's shingles once."""

    def __init__(self, text_of: Callable[[Hashable], str], ngram: int = 5) -> None:
        self._text_of = text_of
        self._ngram = ngram
        self._cache: dict[Hashable, np.ndarray] = {}

    def shingles(self, key: Hashable) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = shingles(self._text_of(key), self._ngram)
        return self._cache[key]

    def __call__(self, a: Hashable, b: Hashable) -> float:
        return jaccard(self.shingles(a), self.shingles(b))
