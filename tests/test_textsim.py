"""codetune.textsim: the one shingling/MinHash/LSH module that collect's dedup and build's
decontamination share."""

from __future__ import annotations

import random

import numpy as np
import pytest

from codetune import textsim
from codetune.collect.dedup import minhash_values, near_duplicates
from codetune.dataset import decontam


def program(rng: random.Random, lines: int = 80) -> str:
    return "\n".join(
        f"value{rng.randrange(10**6)} = call{rng.randrange(10**6)}(arg{i}, {i})" for i in range(lines)
    )


@pytest.mark.parametrize(("num_perm", "threshold"), [(256, 0.7), (128, 0.8), (64, 0.8)])
def test_lsh_is_tuned_below_the_threshold(num_perm: int, threshold: float) -> None:
    bands, rows = textsim.lsh_params(num_perm, threshold)
    assert bands * rows <= num_perm
    assert textsim.candidate_probability(threshold, bands, rows) >= 0.995
    # bigcode's b=25, r=10 at 256 permutations finds a pair at 0.75 only ~77% of the time
    assert textsim.candidate_probability(0.75, 25, 10) < 0.8


def test_signature_estimates_the_exact_jaccard() -> None:
    rng = random.Random(0)
    a = program(rng)
    lines = a.splitlines()
    b = "\n".join([*lines[:60], program(rng, 20)])
    exact = textsim.text_jaccard(a, b)
    estimate = textsim.estimated_jaccard(textsim.minhash(a), textsim.minhash(b))
    assert 0.3 < exact < 0.9 and abs(estimate - exact) < 0.1
    assert np.array_equal(textsim.minhash(a), textsim.minhash(a))  # deterministic
    assert textsim.text_jaccard(a, a) == 1.0 and textsim.text_jaccard(a, program(rng)) < 0.05


def test_collect_and_decontam_agree_on_what_is_near() -> None:
    rng = random.Random(1)
    texts = [program(rng) for _ in range(6)]
    lines = texts[2].splitlines()
    near = "\n".join(lines[:70] + ["extra = 1"] * 3)  # Jaccard ~0.8 to texts[2]
    far = "\n".join(lines[:30]) + "\n" + program(rng, 50)
    assert textsim.text_jaccard(near, texts[2]) >= 0.75 > 0.5 > textsim.text_jaccard(far, texts[2])
    items = [(i, minhash_values(t)) for i, t in enumerate([*texts, near, far])]
    everything = [*texts, near, far]
    assert near_duplicates(items, 0.7, text_of=everything.__getitem__) == {6: 2}
    assert decontam.near_duplicates(texts, [near, far], threshold=0.7, num_perm=256) == [0]
