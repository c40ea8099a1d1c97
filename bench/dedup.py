"""Near-duplicate removal: codetune's LSH (tuned below the threshold, candidates confirmed on the exact
shingles) against datasketch's plain MinHashLSH with bigcode's parameters (256 permutations,
threshold 0.7), on generated files with known twins.

The corpus: ``--pairs`` files each with a twin made by renaming identifiers until the exact shingle
Jaccard lands in [0.75, 0.95], ``--pairs`` unrelated files, and ``--pairs // 2`` loose relatives
(Jaccard 0.4-0.65, no twin: dropping one is a false positive). Both sides see the same shingles
(codetune.textsim word 5-grams) and the same order. Run:

    python bench/dedup.py --pairs 300

Recall: twin pairs of which one file was dropped. Precision: dropped files that really have a kept
twin at Jaccard >= 0.7. files/s: signatures + index, per side, in CPU seconds of this process (the
machine is shared; wall time would measure the neighbours).
"""

from __future__ import annotations

import argparse
import random
import time

from codetune import textsim
from codetune.collect.dedup import minhash_values, near_duplicates

VERBS = [
    "get",
    "set",
    "load",
    "save",
    "parse",
    "read",
    "write",
    "open",
    "close",
    "build",
    "make",
    "find",
    "check",
    "send",
    "update",
]
NOUNS = [
    "user",
    "item",
    "file",
    "path",
    "buffer",
    "stream",
    "node",
    "record",
    "entry",
    "config",
    "value",
    "token",
    "index",
    "cache",
    "key",
]
THRESHOLD, NUM_PERM = 0.7, 256


def identifier(rng: random.Random) -> str:
    return rng.choice(VERBS) + rng.choice(NOUNS).title() + str(rng.randrange(1000))


def program(rng: random.Random, functions: int) -> str:
    """Kotlin-like source: small functions over a shared pool of names."""
    pool = [identifier(rng) for _ in range(functions * 3)]
    lines = []
    for _ in range(functions):
        name, arg, local = rng.sample(pool, 3)
        lines.append(f"fun {name}({arg}: {rng.choice(NOUNS).title()}): Int {{")
        for _ in range(rng.randint(2, 5)):
            a, b = rng.sample(pool, 2)
            lines.append(f"    val {local} = {a}({arg}, {b}) + {rng.randrange(100)}")
        lines.append(f"    return {local}\n}}\n")
    return "\n".join(lines)


def renamed_twin(rng: random.Random, text: str, low: float, high: float) -> str | None:
    """Rename identifiers one at a time until the Jaccard to ``text`` falls in [low, high]."""
    names = sorted({w for w in textsim.words(text) if w[0].isalpha() and w[-1].isdigit()})
    rng.shuffle(names)
    original, twin = textsim.shingles(text), text
    for name in names:
        twin = twin.replace(name, identifier(rng) + "x")
        similarity = textsim.jaccard(original, textsim.shingles(twin))
        if similarity < low:
            return None
        if similarity <= high:
            return twin
    return None


def make_corpus(pairs: int, seed: int) -> tuple[list[str], list[tuple[int, int]]]:
    rng = random.Random(seed)
    texts: list[str] = []
    twins: list[tuple[int, int]] = []
    while len(twins) < pairs:
        base = program(rng, rng.randint(4, 30))
        target = rng.uniform(0.75, 0.95)
        twin = renamed_twin(rng, base, 0.75, min(0.95, target + 0.02))
        if twin is None:
            continue
        twins.append((len(texts), len(texts) + 1))
        texts += [base, twin]
    for _ in range(pairs):
        texts.append(program(rng, rng.randint(4, 30)))
    relatives = 0
    while relatives < pairs // 2:
        base = program(rng, rng.randint(8, 30))
        cousin = renamed_twin(rng, base, 0.4, 0.65)
        if cousin is not None:
            texts += [base, cousin]
            relatives += 1
    order = list(range(len(texts)))
    rng.shuffle(order)
    where = {old: new for new, old in enumerate(order)}
    return [texts[i] for i in order], [(where[a], where[b]) for a, b in twins]


def run_codetune(texts: list[str]) -> tuple[set[int], float]:
    start = time.process_time()
    items = [(i, minhash_values(t, NUM_PERM)) for i, t in enumerate(texts)]
    dupes = near_duplicates(items, THRESHOLD, NUM_PERM, text_of=texts.__getitem__)
    return set(dupes), time.process_time() - start


def run_datasketch(texts: list[str]) -> tuple[set[int], float]:
    """bigcode's scheme: query the plain LSH, drop the file when any candidate exists, else insert."""
    from datasketch import MinHash, MinHashLSH

    start = time.process_time()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    dropped = set()
    for i, text in enumerate(texts):
        words = textsim.words(text)
        grams = {" ".join(words[k : k + 5]).encode() for k in range(max(len(words) - 4, 1))}
        signature = MinHash(num_perm=NUM_PERM)
        signature.update_batch(grams)
        if lsh.query(signature):
            dropped.add(i)
        else:
            lsh.insert(i, signature)
    return dropped, time.process_time() - start


def score(texts: list[str], twins: list[tuple[int, int]], dropped: set[int]) -> tuple[float, float]:
    recall = sum(1 for a, b in twins if a in dropped or b in dropped) / len(twins)
    kept = [i for i in range(len(texts)) if i not in dropped]
    shingles = {i: textsim.shingles(t) for i, t in enumerate(texts)}
    true = sum(
        1 for d in dropped if any(textsim.jaccard(shingles[d], shingles[k]) >= THRESHOLD for k in kept)
    )
    return recall, true / max(len(dropped), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    texts, twins = make_corpus(args.pairs, args.seed)
    similarity = {pair: textsim.text_jaccard(texts[pair[0]], texts[pair[1]]) for pair in twins}
    hard = [pair for pair in twins if similarity[pair] < 0.8]
    print(
        f"{len(texts)} files, {len(twins)} renamed twin pairs at Jaccard {min(similarity.values()):.2f}-0.95"
    )
    bands, rows = textsim.lsh_params(NUM_PERM, THRESHOLD)
    speeds = {}
    for name, run in (("datasketch plain LSH (b=25, r=10)", run_datasketch), ("codetune", run_codetune)):
        dropped, seconds = run(texts)
        recall, precision = score(texts, twins, dropped)
        speeds[name] = len(texts) / seconds
        label = name if name != "codetune" else f"codetune (b={bands}, r={rows}, exact confirm)"
        hard_recall = sum(1 for a, b in hard if a in dropped or b in dropped) / max(len(hard), 1)
        print(
            f"{label}: recall {recall:.1%} ({hard_recall:.1%} of the {len(hard)} pairs below 0.80), "
            f"precision {precision:.1%}, {speeds[name]:.0f} files/s, dropped {len(dropped)}"
        )
    ours, theirs = speeds["codetune"], speeds["datasketch plain LSH (b=25, r=10)"]
    print(f"ratio: {ours / theirs:.2f}x files/s codetune near-dedup vs datasketch plain MinHashLSH")


if __name__ == "__main__":
    main()
