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
