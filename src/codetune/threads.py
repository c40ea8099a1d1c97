"""How many CPU threads torch uses: the cores the machine really has free, following its load.

torch starts one OpenMP thread per core, and a parallel op ends only when its slowest thread does.
When another process holds a core (an editor, a build, a second server), the thread that lost its
core stalls the op for a whole scheduler slice while its siblings spin: measured on a 2-core machine
with one busy neighbour, a decode forward of a tiny model took 92-106 ms with 2 threads and 2.6 ms
with 1 (docs/troubleshooting.md). So codetune counts the cores other processes keep busy (the
machine's CPU time from /proc/stat less its own) and gives torch the rest, at least one. Long loops
call ``follow_load()`` at each step (``codetune.progress`` does it on every update); it measures
again at most every ``INTERVAL`` seconds, so a neighbour that starts or stops mid-run is followed.

``CODETUNE_THREADS=N`` (or ``OMP_NUM_THREADS``) fixes the count; ``CODETUNE_THREADS=torch`` leaves
torch's own default (one thread per core) alone.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

INTERVAL = 2.0  # seconds between two measurements of the machine's load
FIRST_SAMPLE = 0.1  # seconds of the first measurement, before any work
# A core counts as taken when others keep it busy this much: with 2 of our threads and one busy
# neighbour on 2 cores the neighbour shows about 0.67 of a core, with 1 thread a whole one.
TAKEN = 0.5


@dataclass
class _Sample:
    wall: float
    busy: float  # seconds of CPU time spent on our cores, by every process
    own: float  # seconds of CPU time spent by this process


class _Governor:
    def __init__(self) -> None:
        self.cores = usable_cores()
        self.last: _Sample | None = None
        self.threads: int | None = None
        self.local = threading.local()  # torch's thread count is per calling thread

    def follow(self) -> int | None:
        mode = os.environ.get("CODETUNE_THREADS", "auto").strip().lower()
        if mode == "torch":
            return None
        fixed = mode if mode != "auto" else os.environ.get("OMP_NUM_THREADS", "")
        if fixed.isdigit() and int(fixed) > 0:
            return self._apply(min(int(fixed), 256))
        now = time.monotonic()
        if self.last is None:
            self.last = _sample()
            time.sleep(FIRST_SAMPLE)
        elif now - self.last.wall < INTERVAL:
            return self._apply(self.threads or self.cores)
        current = _sample()
        if current is None or self.last is None:
            return self._apply(self.cores)
        wall = current.wall - self.last.wall
        others = max(0.0, (current.busy - self.last.busy) - (current.own - self.last.own)) / max(wall, 1e-3)
        self.last = current
        wanted = threads_for(self.cores, others)
        if wanted != self.threads:
            logger.info(
                "%.1f of %d cores busy with other work: %d torch thread(s)", others, self.cores, wanted
            )
        self.threads = wanted
        return self._apply(wanted)

    def _apply(self, threads: int) -> int:
        if getattr(self.local, "threads", None) != threads:
            import torch

            torch.set_num_threads(threads)
            self.local.threads = threads
        return threads


def threads_for(cores: int, others: float) -> int:
    """Threads for ``cores`` usable cores of which other processes keep ``others`` busy: at least one."""
    return max(1, min(cores, cores - int(others + (1 - TAKEN))))


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period) + 0.5)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _sample() -> _Sample | None:
    """CPU time spent on the cores we may use (all processes) and by this process, in seconds."""
    try:
        allowed = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        with open("/proc/stat", encoding="ascii") as handle:
            lines = [
                line.split() for line in handle if line.startswith("cpu") and not line.startswith("cpu ")
            ]
    except (OSError, AttributeError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    busy = 0
    for fields in lines:
        if fields[0] in allowed:
            values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
            busy += sum(values) - values[3] - values[4]
    times = os.times()
    return _Sample(time.monotonic(), busy / ticks, times.user + times.system)


_governor: _Governor | None = None
_lock = threading.Lock()


def follow_load() -> int | None:
    """Set torch's thread count (in the calling thread) to the cores free now; cheap between measurements.

    Returns the count set, or None where torch's default is kept (``CODETUNE_THREADS=torch``).
    """
    global _governor
    with _lock:
        if _governor is None:
            _governor = _Governor()
        return _governor.follow()
