"""Leakage control: MinHash near-duplicates of train in test, and benchmark text in any split."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from codetune.errors import InputError

WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    return WORD.findall(text)


def shingles(text: str, n: int) -> set[bytes]:
    tokens = words(text)
    if len(tokens) < n:
        return {" ".join(tokens).encode()} if tokens else set()
    return {" ".join(tokens[i : i + n]).encode() for i in range(len(tokens) - n + 1)}


def _minhash(text: str, num_perm: int, n: int) -> Any:
    """MinHash of a text's word n-grams, hashed with numpy (datasketch's own update is per item)."""
    import numpy as np
    from datasketch import MinHash

    mh = MinHash(num_perm=num_perm, seed=1)
    tokens = words(text)
    if not tokens:
        return mh
    token_hashes = np.fromiter((zlib.crc32(t.encode()) for t in tokens), dtype=np.uint64, count=len(tokens))
    width = max(len(tokens) - n + 1, 1)
    grams = np.zeros(width, dtype=np.uint64)
    for k in range(min(n, len(tokens))):
        grams = (grams * np.uint64(1_000_003) + token_hashes[k : k + width]) & np.uint64(0xFFFFFFFF)
    hv = np.unique(grams)
    a, b = mh.permutations
    # The same permutation datasketch's update_batch applies (uint64 wrap-around included).
    phv = ((np.outer(hv, a) + b) % np.uint64((1 << 61) - 1)) & np.uint64(0xFFFFFFFF)
    mh.hashvalues = np.minimum(phv.min(axis=0), mh.hashvalues)
    return mh


def near_duplicates(
    train: Iterable[str], test: list[str], *, threshold: float = 0.8, num_perm: int = 64, shingle: int = 5
) -> list[int]:
    """Indices of ``test`` texts whose estimated Jaccard similarity to some train text is >= threshold."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for index, text in enumerate(train):
            session.insert(str(index), _minhash(text, num_perm, shingle), check_duplication=False)
    hits = []
    for index, text in enumerate(test):
        if not text.strip():
            continue
        if lsh.query(_minhash(text, num_perm, shingle)):
            hits.append(index)
    return hits


def read_benchmarks(paths: list[Path]) -> list[str]:
    """Snippets from benchmark files: each JSON/JSONL record's string values, else the whole text."""
    snippets: list[str] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise InputError(f"benchmark file not found: {path}")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            text = file.read_text(encoding="utf-8", errors="replace")
            if file.suffix in (".jsonl", ".json"):
                try:
                    records = (
                        [json.loads(line) for line in text.splitlines() if line.strip()]
                        if file.suffix == ".jsonl"
                        else json.loads(text)
                    )
                except json.JSONDecodeError as error:
                    raise InputError(f"benchmark file {file} is not valid JSON: {error}") from None
                records = records if isinstance(records, list) else [records]
                for record in records:
                    values = record.values() if isinstance(record, dict) else [record]
                    snippets.extend(v for v in values if isinstance(v, str) and v.strip())
            else:
                snippets.append(text)
    return snippets


class BenchmarkFilter:
    """Flags texts that contain a benchmark snippet verbatim or share a word n-gram with one."""

    def __init__(self, snippets: list[str], *, ngram: int = 10, min_substring_chars: int = 50) -> None:
        self.ngram = ngram
        self.verbatim = [" ".join(s.split()) for s in snippets if len(s.strip()) >= min_substring_chars]
        self.grams: set[tuple[str, ...]] = set()
        for snippet in snippets:
            tokens = words(snippet)
            self.grams.update(tuple(tokens[i : i + ngram]) for i in range(len(tokens) - ngram + 1))

    def reason(self, text: str) -> str | None:
        """``substring``, ``ngram`` or None."""
        if self.verbatim:
            flat = " ".join(text.split())
            if any(snippet in flat for snippet in self.verbatim):
                return "substring"
        if self.grams:
            tokens = words(text)
            n = self.ngram
            if any(tuple(tokens[i : i + n]) in self.grams for i in range(len(tokens) - n + 1)):
                return "ngram"
        return None
