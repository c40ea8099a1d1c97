"""Worker processes for collect that never outlive it: a killed collect (even ``kill -9``) takes its
workers with it, instead of leaving them blocked on a queue nobody will ever write to."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Have this process killed when ``parent_pid`` dies; exit now if it already has."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if not armed:  # elsewhere: watch for being re-parented
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def _start_worker(parent_pid: int, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
    die_with_parent(parent_pid)
    initializer(*initargs)


def worker_pool(
    workers: int, initializer: Callable[..., None], initargs: tuple[Any, ...]
) -> ProcessPoolExecutor:
    """A process pool whose workers run ``initializer(*initargs)`` and die with this process.

    Workers are forked, so modules imported here (tree-sitter grammars) are shared.
    """
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, initargs),
    )


# ---- Ray --------------------------------------------------------------------------------------------
# The same step functions the local pool runs, mapped over a Ray cluster with Ray Data: the pipeline
# hands either executor ``map(fn, chunks)``; only where the work runs changes.


def connect_ray(address: str | None) -> Any:
    """Join the Ray cluster at ``address`` (or the one this process already joined, or a new local one)."""
    try:
        import ray
    except ImportError:
        from codetune.errors import ConfigError

        raise ConfigError("--executor ray needs Ray installed (pip install 'ray[data]')") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as error:
            from codetune.errors import ConfigError

            raise ConfigError(f"cannot reach the Ray cluster at {address}: {error}") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Plain tasks, not the hash shuffle's long-lived aggregator actors, which hold CPUs a small
    # cluster needs for the reduce (a 2-CPU cluster stalled on it).
    context.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    return ray


def _run_pickled(
    row: dict[str, Any], fn: Callable[[Any], Any], initializer: Callable[..., None], initargs: tuple[Any, ...]
) -> dict[str, Any]:
    import pickle

    initializer(*initargs)  # cheap: it registers languages and sets the worker's context
    result = fn(pickle.loads(row["task"]))
    return {"index": row["index"], "result": pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)}


class RayExecutor:
    """``map`` over a Ray cluster with Ray Data, shaped like the local pool (``map`` keeps the order)."""

    def __init__(
        self, address: str | None, initializer: Callable[..., None], initargs: tuple[Any, ...]
    ) -> None:
        self.ray = connect_ray(address)
        self.initializer, self.initargs = initializer, initargs

    def map(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Any:
        """Yield ``fn(task)`` for each task, in order, as the cluster finishes them."""
        import pickle

        if not tasks:
            return
        items = [{"index": i, "task": pickle.dumps(task)} for i, task in enumerate(tasks)]
        dataset = self.ray.data.from_items(items, override_num_blocks=max(1, len(items))).map(
            _run_pickled, fn_args=(fn, self.initializer, self.initargs)
        )
        waiting: dict[int, Any] = {}
        following = 0
        for row in dataset.iter_rows():
            waiting[row["index"]] = pickle.loads(row["result"])
            while following in waiting:
                yield waiting.pop(following)
                following += 1

    def shutdown(self, cancel_futures: bool = False) -> None:
        """Nothing to release: the cluster outlives one collect."""


def open_executor(
    kind: str, workers: int, address: str | None, initializer: Callable[..., None], initargs: tuple[Any, ...]
) -> Any:
    """The local process pool or a Ray cluster, both with ``map(fn, tasks)`` and ``shutdown()``."""
    if kind == "ray":
        return RayExecutor(address, initializer, initargs)
    return worker_pool(workers, initializer, initargs)


def _band_partition(signatures: Any, first: int, ranges: list[tuple[int, int]], reducers: int) -> Any:
    """One block of signatures (rows ``first``...) cut into LSH bands, each band's (keys, items) split
    over ``reducers`` by the band's first value: a band key always meets its twins in one reducer."""
    import numpy as np

    items = np.arange(first, first + len(signatures), dtype=np.int64)
    parts: list[list[tuple[int, Any, Any]]] = [[] for _ in range(reducers)]
    for band, (lo, hi) in enumerate(ranges):
        keys = np.ascontiguousarray(signatures[:, lo:hi])
        owner = keys[:, 0] % reducers  # min-hash values are uniform: a fair, process-independent hash
        for r in range(reducers):
            mask = owner == r
            parts[r].append((band, keys[mask], items[mask]))
    return parts[0] if reducers == 1 else tuple(parts)


def _band_buckets(*parts: list[tuple[int, Any, Any]]) -> list[Any]:
    """Items sharing a band key, from every block's share of this reducer: one sorted array per bucket
    of two or more."""
    import numpy as np

    by_band: dict[int, tuple[list[Any], list[Any]]] = {}
    for part in parts:
        for band, keys, items in part:
            entry = by_band.setdefault(band, ([], []))
            entry[0].append(keys)
            entry[1].append(items)
    buckets = []
    for key_parts, item_parts in by_band.values():
        keys, items = np.concatenate(key_parts), np.concatenate(item_parts)
        if len(keys) < 2:
            continue
        order = np.lexsort(keys.T[::-1])
        keys, items = keys[order], items[order]
        starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)])
        ends = np.r_[starts[1:], len(keys)]
        buckets.extend(np.sort(items[a:b]) for a, b in zip(starts, ends, strict=True) if b - a > 1)
    return buckets


def _confirm_clusters(
    clusters: list[tuple[list[tuple[Any, bytes]], dict[Any, str]]],
    threshold: float,
    num_perm: int,
    ngram: int,
) -> dict[Any, Any]:
    from codetune.collect.dedup import near_duplicates

    found: dict[Any, Any] = {}
    for members, texts in clusters:
        found.update(near_duplicates(members, threshold, num_perm, text_of=texts.__getitem__, ngram=ngram))
    return found


def _parallelism(ray: Any, rows: int, per_task: int) -> int:
    """Tasks for ``rows``: one per ``per_task`` rows, at most one per cluster CPU (a task per few rows
    would spend a small corpus's time on scheduling)."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(cpus, -(-rows // per_task)))


def ray_near_duplicates(
    items: Any,
    threshold: float,
    num_perm: int,
    texts: list[str],
    ngram: int = 5,
    address: str | None = None,
    rows_per_task: int = 20_000,
) -> dict[Any, Any]:
    """:func:`codetune.collect.dedup.near_duplicates` over a Ray cluster, with the same result.

    ``items`` are (key, signature) pairs whose keys index ``texts`` (for the exact Jaccard check).
    Signatures (computed per file by the workers) -> LSH band keys, hash-shuffled over Ray tasks ->
    buckets of items sharing a band -> clusters (connected buckets) -> ``near_duplicates`` on each
    cluster, spread over tasks. An item's LSH candidates all share a band with it, so they sit in its
    cluster, in the same order: each cluster alone gives the answer the whole input would, the first
    item (in input order) kept.

    The shuffle is Ray tasks with one return per reducer (Ray's own shuffle pattern), not Ray Data's
    ``groupby``: its sort shuffle of one row per (file, band) took 10x the local LSH on 2 CPUs.
    ``rows_per_task`` signatures go to one map task, and ``rows_per_task`` x bands band keys to a
    reducer, never more tasks than the cluster has CPUs.
    """
    import numpy as np

    from codetune import textsim

    ray = connect_ray(address)
    pairs = list(items)
    if not pairs:
        return {}
    keys = [key for key, _ in pairs]
    signatures = [bytes(values) if isinstance(values, bytes) else values.tobytes() for _, values in pairs]
    matrix = np.frombuffer(b"".join(signatures), dtype=np.uint32).reshape(len(pairs), num_perm)
    bands, rows_per_band = textsim.lsh_params(num_perm, threshold)  # the bands textsim's LSHIndex uses
    ranges = [(rows_per_band * b, rows_per_band * (b + 1)) for b in range(bands)]
    mappers = _parallelism(ray, len(pairs), rows_per_task)
    reducers = _parallelism(ray, len(pairs) * bands, rows_per_task * bands)
    partition = ray.remote(_band_partition).options(num_returns=reducers)
    step = -(-len(pairs) // mappers)
    shares = [
        partition.remote(matrix[lo : lo + step], lo, ranges, reducers) for lo in range(0, len(pairs), step)
    ]
    if reducers == 1:
        shares = [[share] for share in shares]
    reduce = ray.remote(_band_buckets)
    bucket_lists = ray.get([reduce.remote(*(share[r] for share in shares)) for r in range(reducers)])
    parent = list(range(len(pairs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for buckets in bucket_lists:
        for members in buckets:
            first = int(members[0])
            for other in members[1:]:
                a, b = root(first), root(int(other))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    clusters: dict[int, list[int]] = {}
    for i in range(len(pairs)):
        clusters.setdefault(root(i), []).append(i)
    groups = [members for members in clusters.values() if len(members) > 1]
    if not groups:
        return {}
    # Confirming costs about the text a cluster holds: deal clusters, largest first, to the lightest task.
    tasks = _parallelism(ray, len(groups), 1)
    loads, batches = [0] * tasks, [[] for _ in range(tasks)]
    for members in sorted(groups, key=lambda m: -sum(len(texts[keys[i]]) for i in m)):
        lightest = loads.index(min(loads))
        batches[lightest].append(
            ([(keys[i], signatures[i]) for i in members], {keys[i]: texts[keys[i]] for i in members})
        )
        loads[lightest] += sum(len(texts[keys[i]]) for i in members)
    confirm = ray.remote(_confirm_clusters)
    dupes: dict[Any, Any] = {}
    for found in ray.get([confirm.remote(batch, threshold, num_perm, ngram) for batch in batches if batch]):
        dupes.update(found)
    return dupes
