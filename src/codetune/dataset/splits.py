"""Train/valid/test splits by repository, directory, file or time, never by example, so no text leaks.

Whole groups (repositories, directories or files) are dealt to the splits so that each split's
share of the corpus (in characters, a stand-in for tokens) comes close to the asked fraction. When
whole repositories cannot come close (too few of them, or one dominates), the plan says so plainly
and names the alternatives: the split is carved from files inside repositories (``split_fallback``),
or whole directories are held out (``directory``), or the files changed last (``time``: test is the
newest commits' files, valid the ones before). The plan records where every repository went.
"""

from __future__ import annotations

import hashlib
import posixpath
import random
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codetune.errors import InputError

SPLITS = ("train", "valid", "test")
HELD_OUT = ("test", "valid")
# A split is "close" when its realised share is within this fraction of the asked share.
TOLERANCE = 0.5
TRIES = 32


@dataclass
class SplitPlan:
    """Which split each document went to, and the record of how (written to stats.json)."""

    by: str
    labels: list[str]
    asked: dict[str, float]
    realised: dict[str, float]
    repositories: dict[str, dict[str, int]]
    carved: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "asked": self.asked,
            "realised_share_of_characters": {s: round(v, 4) for s, v in self.realised.items()},
            "carved_within_repositories": self.carved,
            "repositories": self.repositories,
            "warnings": self.warnings,
        }


ALTERNATIVES = (
    "split_by: directory holds out whole directories, split_by: time the files changed in the newest commits"
)


def group_key(doc: dict[str, Any], by: str) -> str:
    """The unit a split keeps together: the repository, the directory, or the file."""
    repo = str(doc.get("repo") or "")
    if by == "repo":
        return repo
    if by == "directory":
        return f"{repo}::{posixpath.dirname(doc['path'])}"
    return f"{repo}::{doc['path']}"


def resolve_split_by(docs: list[dict[str, Any]], split_by: str) -> str:
    """``auto``: by repository when there are at least three and none holds half the files, else by file."""
    if split_by != "auto":
        return split_by
    return "repo" if _whole_repositories_problem(docs) is None else "file"


def _whole_repositories_problem(docs: list[dict[str, Any]]) -> str | None:
    """Why whole repositories cannot make the splits (too few, or one dominates), or None."""
    sizes = Counter(str(doc.get("repo") or "") for doc in docs)
    if len(sizes) < 3:
        return f"{len(sizes)} repositor{'y' if len(sizes) == 1 else 'ies'} (at least 3 are needed)"
    repo, largest = sizes.most_common(1)[0]
    if largest >= len(docs) / 2:
        return f"{repo} holds {largest} of the {len(docs)} files"
    return None


def _weight(doc: dict[str, Any]) -> int:
    return max(len(doc.get("text") or ""), 1)


def _stable_order(keys: list[str], seed: int) -> list[str]:
    # A seeded hash (not Python's hash()) keeps the order the same across processes.
    return sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())


def _deal(order: list[str], weights: dict[str, int], targets: dict[str, float]) -> dict[str, str]:
    """Give each group, in order, to the held-out split it brings closest to its target, else train."""
    filled = dict.fromkeys(HELD_OUT, 0.0)
    where: dict[str, str] = {}
    for group in order:
        choice, best = "train", 0.0
        for split in HELD_OUT:
            if targets[split] <= 0:
                continue
            gain = abs(filled[split] - targets[split]) - abs(filled[split] + weights[group] - targets[split])
            if gain > best:
                choice, best = split, gain
        where[group] = choice
        if choice != "train":
            filled[choice] += weights[group]
    _fill_empty(where, weights, targets)
    return where


def _fill_empty(where: dict[str, str], weights: dict[str, int], targets: dict[str, float]) -> None:
    """An asked-for split left empty takes the train group nearest its target, if train keeps one."""
    for split in HELD_OUT:
        if targets[split] <= 0 or split in where.values():
            continue
        train = [g for g, s in where.items() if s == "train"]
        if len(train) > 1:
            where[min(train, key=lambda g: abs(weights[g] - targets[split]))] = split
    if "train" not in where.values() and where:
        where[min(where, key=lambda g: weights[g])] = "train"


def _error(where: dict[str, str], weights: dict[str, int], targets: dict[str, float]) -> float:
    filled = Counter()
    for group, split in where.items():
        filled[split] += weights[group]
    return sum(abs(filled[s] - targets[s]) for s in HELD_OUT)


def _shares(labels: list[str], docs: list[dict[str, Any]]) -> dict[str, float]:
    total = sum(_weight(d) for d in docs) or 1
    filled = Counter()
    for doc, label in zip(docs, labels, strict=True):
        filled[label] += _weight(doc)
    return {s: filled[s] / total for s in SPLITS}


def _close(realised: float, asked: float) -> bool:
    return abs(realised - asked) <= TOLERANCE * asked


def plan_splits(
    docs: list[dict[str, Any]],
    valid_fraction: float,
    test_fraction: float,
    seed: int,
    split_by: str,
    *,
    fallback: bool = True,
) -> SplitPlan:
    """Deal documents to train/valid/test by ``split_by`` (auto, repo, directory, file, time), aiming
    at the fractions."""
    by = resolve_split_by(docs, split_by)
    asked = {"valid": valid_fraction, "test": test_fraction}
    said: list[str] = []
    problem = _whole_repositories_problem(docs) if split_by in ("auto", "repo") else None
    if problem and any(asked.values()) and (by == "file" or fallback):
        instead = "split by file instead" if by == "file" else "files are taken from inside repositories"
        said.append(
            f"whole-repository splits are impossible: {problem}; {instead}, so held-out files share "
            f"repositories with train files ({ALTERNATIVES})"
        )
    if by == "time":
        return _plan_by_time(docs, asked)
    weights: Counter = Counter()
    for doc in docs:
        weights[group_key(doc, by)] += _weight(doc)
    total = sum(weights.values())
    targets = {s: asked[s] * total for s in HELD_OUT}
    groups = _stable_order(list(weights), seed)
    rng = random.Random(seed)
    best: dict[str, str] | None = None
    for _ in range(TRIES if len(groups) > 1 else 1):
        rng.shuffle(groups)
        where = _deal(groups, weights, targets)
        if best is None or _error(where, weights, targets) < _error(best, weights, targets):
            best = where
    where = best or {}
    labels = [where[group_key(doc, by)] for doc in docs]
    warnings: list[str] = said
    carved: dict[str, list[str]] = {}
    realised = _shares(labels, docs)
    if by == "repo" and fallback:
        for split in HELD_OUT:
            if asked[split] > 0 and not _close(realised[split], asked[split]):
                found = _carve(docs, labels, split, targets[split], seed)
                if found:
                    carved[split] = found
                    warnings.append(
                        f"{split}: no set of whole repositories comes near {asked[split]:.1%} of the corpus "
                        f"(closest {realised[split]:.1%}), so it was taken from files of "
                        f"{', '.join(found)} (those repositories are in more than one split; "
                        f"{ALTERNATIVES}; split_fallback: false keeps whole repositories)"
                    )
                    realised = _shares(labels, docs)
    for split in HELD_OUT:
        if asked[split] <= 0:
            continue
        if realised[split] == 0:
            warnings.append(
                f"{split} is empty: {len(docs)} document(s) in {len(weights)} "
                f"{GROUP_NAMES[by]} cannot give every split one"
            )
        elif not _close(realised[split], asked[split]) and split not in carved:
            warnings.append(f"{split} is {realised[split]:.1%} of the corpus, {asked[split]:.1%} was asked")
    return SplitPlan(by, labels, asked, realised, _where_repositories_went(docs, labels), carved, warnings)


GROUP_NAMES = {"repo": "repositories", "directory": "directories", "file": "files"}


def _where_repositories_went(docs: list[dict[str, Any]], labels: list[str]) -> dict[str, dict[str, int]]:
    repositories: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for doc, label in zip(docs, labels, strict=True):
        repositories[str(doc.get("repo") or "")][label] += 1
    return {repo: {s: n for s, n in counts.items() if n} for repo, counts in sorted(repositories.items())}


def _plan_by_time(docs: list[dict[str, Any]], asked: dict[str, float]) -> SplitPlan:
    """Test: the files changed in the newest commits; valid: those changed just before; train: the rest.

    Files changed in one commit (one timestamp) stay in one split. A file's time is its ``changed``
    value (seconds) when the corpus has one, else its last commit in its repository's local checkout.
    """
    times = file_times(docs)
    total = sum(_weight(doc) for doc in docs) or 1
    commits: dict[int, list[int]] = defaultdict(list)
    for index, doc in enumerate(docs):
        commits[times.get((str(doc.get("repo") or ""), doc["path"]), 0)].append(index)
    labels = ["train"] * len(docs)
    newest = sorted(commits, reverse=True)
    filled = dict.fromkeys(HELD_OUT, 0.0)
    for split in HELD_OUT:  # test first: it gets the newest files
        target = asked[split] * total
        while newest and asked[split] > 0 and len(newest) > 1:
            weight = sum(_weight(docs[i]) for i in commits[newest[0]])
            if filled[split] and abs(filled[split] + weight - target) >= abs(filled[split] - target):
                break
            for i in commits[newest.pop(0)]:
                labels[i] = split
            filled[split] += weight
    realised = _shares(labels, docs)
    warnings = [
        f"{split} is {realised[split]:.1%} of the corpus, {asked[split]:.1%} was asked (files of one "
        "commit stay together)"
        for split in HELD_OUT
        if asked[split] > 0 and not _close(realised[split], asked[split])
    ]
    return SplitPlan("time", labels, asked, realised, _where_repositories_went(docs, labels), {}, warnings)


def file_times(docs: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """(repo, path) -> when the file last changed: its ``changed`` value, else from ``git log`` in the
    repository's local checkout (a repository collected from a local folder is keyed by its path)."""
    times: dict[tuple[str, str], int] = {}
    missing: set[str] = set()
    for doc in docs:
        repo = str(doc.get("repo") or "")
        if doc.get("changed") is not None:
            times[(repo, doc["path"])] = int(doc["changed"])
        else:
            missing.add(repo)
    for repo in sorted(missing):
        history = _git_times(repo)
        if history is None:
            raise InputError(
                f"split_by: time needs when each file last changed, but the corpus has no 'changed' "
                f"column and {repo or 'its repository'!r} is not a local git checkout with history; "
                "use split_by: directory (or repo, file)"
            )
        times.update({(repo, path): when for path, when in history.items()})
    if len(set(times.values())) < 2:
        raise InputError(
            "split_by: time needs files changed at different times, but every file has the same last "
            "commit (a shallow clone?); use split_by: directory"
        )
    return times


def _git_times(folder: str) -> dict[str, int] | None:
    """Path (relative to ``folder``) -> time of the newest commit that changed it, or None."""
    if not folder or not Path(folder).is_dir():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", folder, "log", "--format=%x00%ct", "--name-only", "--relative", "--no-renames"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    times: dict[str, int] = {}
    for entry in out.stdout.split("\0")[1:]:
        when, _, names = entry.partition("\n")
        for name in names.split("\n"):
            if name.strip():
                times.setdefault(name.strip(), int(when))
    return times


def _carve(docs: list[dict[str, Any]], labels: list[str], split: str, target: float, seed: int) -> list[str]:
    """Give ``split`` files (not whole repositories) until it is near ``target``; returns their repositories.

    The split's whole repositories go back to train first. Files come from one repository while it
    lasts (the largest train one, so the rest of it stays in train), then the next, and train always
    keeps at least one file.
    """
    for i, label in enumerate(labels):
        if label == split:
            labels[i] = "train"
    by_repo: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        if label == "train":
            by_repo[str(docs[i].get("repo") or "")].append(i)
    sizes = {repo: sum(_weight(docs[i]) for i in members) for repo, members in by_repo.items()}
    repos = sorted(by_repo, key=lambda r: (-sizes[r], r))
    left = sum(len(m) for m in by_repo.values())
    filled, used = 0.0, []
    for repo in repos:
        order = _stable_order([f"{docs[i]['path']}#{i}" for i in by_repo[repo]], seed)
        index_of = {f"{docs[i]['path']}#{i}": i for i in by_repo[repo]}
        for key in order:
            i = index_of[key]
            if left <= 1 or abs(filled + _weight(docs[i]) - target) >= abs(filled - target):
                continue
            labels[i] = split
            filled += _weight(docs[i])
            left -= 1
            if repo not in used:
                used.append(repo)
        if _close(filled, target):
            break
    return used
