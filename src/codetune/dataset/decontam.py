"""Leakage control: MinHash near-duplicates of train in test, and benchmark text in any split."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from codetune import textsim
from codetune.errors import InputError

WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Word and punctuation tokens: the unit of the benchmark n-gram check."""
    return WORD.findall(text)


def near_duplicates(
    train: Iterable[str], test: list[str], *, threshold: float = 0.8, num_perm: int = 64, shingle: int = 5
) -> list[int]:
    """Indices of ``test`` texts whose shingle Jaccard similarity to some train text is >= threshold
    (LSH candidates from :mod:`codetune.textsim`, each confirmed on the exact shingles)."""
    index = textsim.LSHIndex(num_perm, threshold)
    train_shingles: list[np.ndarray] = []
    for text in train:
        hashes = textsim.shingles(text, shingle)
        index.insert(len(train_shingles), textsim.signature(hashes, num_perm))
        train_shingles.append(hashes)
    hits = []
    for position, text in enumerate(test):
        if not text.strip():
            continue
        hashes = textsim.shingles(text, shingle)
        candidates = index.candidates(textsim.signature(hashes, num_perm))
        if any(textsim.jaccard(hashes, train_shingles[c]) >= threshold for c in candidates):
            hits.append(position)
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
