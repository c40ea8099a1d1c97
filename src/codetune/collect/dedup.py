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


def contained_bundles(
    files: list[tuple[str, str]],
    ngram: int = 5,
    min_parts: int = 3,
    part_coverage: float = 0.8,
    min_bytes: int = 8192,
) -> dict[int, list[int]]:
    """Files that concatenate other files of their repository (a build bundle of ``modules/``), from
    (repo, text) pairs: index -> indices of >= ``min_parts`` files of the same repo, each at least
    ``part_coverage`` contained in it, that together cover at least half of it. Run it after near
    and exact dedup. Each repository is judged alone, which bounds the memory."""
    by_repo: dict[str, list[int]] = {}
    for index, (repo, _) in enumerate(files):
        by_repo.setdefault(repo, []).append(index)
    found: dict[int, list[int]] = {}
    for members in by_repo.values():
        if len(members) <= min_parts or all(len(files[i][1]) < min_bytes for i in members):
            continue
        shingles = {i: textsim.shingles(files[i][1], ngram) for i in members}
        hashes, counts = np.unique(np.concatenate(list(shingles.values())), return_counts=True)
        shared = hashes[counts > 1]
        for index in members:
            own = shingles[index]
            if len(files[index][1]) < min_bytes or not len(own):
                continue
            if np.isin(own, shared, assume_unique=True).mean() < part_coverage:
                continue  # mostly its own text: not a copy of others
            parts = [
                other
                for other in members
                if other != index
                and 0 < len(shingles[other]) < len(own)
                and len(np.intersect1d(own, shingles[other], assume_unique=True))
                >= part_coverage * len(shingles[other])
            ]
            if len(parts) < min_parts:
                continue
            covered = np.isin(own, np.concatenate([shingles[p] for p in parts])).mean()
            if covered >= 0.5:
                found[index] = parts
    return found
