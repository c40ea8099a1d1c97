"""Torch threads for a test: the machine's cores (two at most) shared among the pytest-xdist workers."""

from __future__ import annotations

import os


def threads_per_worker() -> int:
    """Two threads without xdist (the suite's 2-core target); one per worker when two workers share
    two cores: more threads than cores only spin and wait for each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(2, os.cpu_count() or 1) // workers)
