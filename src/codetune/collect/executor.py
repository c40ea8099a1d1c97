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

    Workers are forked, so modules imported here (datasketch, tree-sitter grammars) are shared.
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


def _band_rows(row: dict[str, Any], ranges: list[tuple[int, int]]) -> list[dict[str, Any]]:
    import numpy as np

    values = np.frombuffer(row["signature"], dtype=np.uint32)
    return [
        {"band": f"{b}:{values[lo:hi].tobytes().hex()}", "item": row["item"]}
        for b, (lo, hi) in enumerate(ranges)
    ]


def _bucket_members(group: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    members = sorted(int(i) for i in group["item"])
    shared = [",".join(map(str, members))] if len(members) > 1 else []
    return {"members": np.array(shared, dtype=object)}


def _confirm_cluster(row: dict[str, Any], threshold: float, num_perm: int, ngram: int) -> dict[str, Any]:
    import pickle

    from codetune.collect.dedup import near_duplicates

    members, texts = pickle.loads(row["members"])
    found = near_duplicates(members, threshold, num_perm, text_of=texts.__getitem__, ngram=ngram)
    return {"dupes": pickle.dumps(found)}


def _parallelism(ray: Any, rows: int, per_task: int) -> int:
    """Blocks or shuffle partitions: one per ``per_task`` rows, at most one per cluster CPU (Ray's
    default of 200 would be hundreds of near-empty tasks for a small corpus)."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(cpus, -(-rows // per_task)))


def ray_near_duplicates(
    items: Any,
    threshold: float,
    num_perm: int,
    texts: list[str],
    ngram: int = 5,
    address: str | None = None,
) -> dict[Any, Any]:
    """:func:`codetune.collect.dedup.near_duplicates` over a Ray cluster, with the same result.

    ``items`` are (key, signature) pairs whose keys index ``texts`` (for the exact Jaccard check).
    Signatures (computed per file by the workers) -> one row per LSH band -> buckets of items sharing
    a band -> clusters (connected buckets) -> ``near_duplicates`` on each cluster. An item's LSH
    candidates all share a band with it, so they sit in its cluster, in the same order: each cluster
    alone gives the answer the whole input would, the first item (in input order) kept.
    """
    import pickle

    from codetune import textsim

    ray = connect_ray(address)
    pairs = list(items)
    keys = [key for key, _ in pairs]
    signatures = [bytes(values) if isinstance(values, bytes) else values.tobytes() for _, values in pairs]
    bands, rows_per_band = textsim.lsh_params(num_perm, threshold)  # the bands textsim's LSHIndex uses
    ranges = [(rows_per_band * b, rows_per_band * (b + 1)) for b in range(bands)]
    rows = [{"item": i, "signature": signature} for i, signature in enumerate(signatures)]
    buckets = (
        ray.data.from_items(rows, override_num_blocks=_parallelism(ray, len(rows), 10_000))
        .flat_map(_band_rows, fn_args=(ranges,))
        .groupby("band", num_partitions=_parallelism(ray, len(rows) * len(ranges), 100_000))
        .map_groups(_bucket_members, batch_format="numpy")
    )
    parent = list(range(len(pairs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for row in buckets.iter_rows():
        first, *rest = (int(i) for i in row["members"].split(","))
        for other in rest:
            a, b = root(first), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    clusters: dict[int, list[int]] = {}
    for i in range(len(pairs)):
        clusters.setdefault(root(i), []).append(i)
    tasks = [
        {
            "members": pickle.dumps(
                ([(keys[i], signatures[i]) for i in members], {keys[i]: texts[keys[i]] for i in members})
            )
        }
        for members in clusters.values()
        if len(members) > 1
    ]
    if not tasks:
        return {}
    blocks = _parallelism(ray, len(tasks), 1_000)
    confirmed = ray.data.from_items(tasks, override_num_blocks=blocks).map(
        _confirm_cluster, fn_args=(threshold, num_perm, ngram)
    )
    dupes: dict[Any, Any] = {}
    for row in confirmed.iter_rows():
        dupes.update(pickle.loads(row["dupes"]))
    return dupes
