"""The quickstart's wall time, cold (an empty cache) and warm (the cache kept), per stage.

Run: python bench/quickstart.py [--runs 1] [--adapt-steps N] [--samples N] [--seed N]

Each run is `python -m codetune quickstart` in a fresh process, as `make quickstart` starts it:
first with ``CODETUNE_CACHE`` set to a new, empty folder (cold: nothing built yet), then again with
the same cache and a new ``--out`` (warm); after each run its report's two leading edit similarities
(line completion, editor replay), base -> tuned, are printed. The stages are the ones the quickstart
times itself (base, collect, build, adapt, eval); "start" is the rest (Python, imports, the summary). CPU
seconds (user + system, the process and its workers) are printed beside the wall time: on a shared
machine the wall time moves with the neighbours, the CPU time much less. Give the machine's load
(printed before each run) with any figure you quote.

The last line compares the cold run's wall time with the goal of 5 minutes on 2 cores (below 1.00x
meets it); the line before compares the warm run with its goal of 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOALS = {"cold": 300.0, "warm": 120.0}
STAGES = ("base", "collect", "build", "adapt", "eval")
FINISHED = re.compile(r"quickstart finished in \S+ \((?P<stages>[^)]*)\)")


def seconds(text: str) -> float:
    """3s, 4m10s, 2h05m (codetune.progress.duration) as seconds."""
    parts = dict((unit, int(value)) for value, unit in re.findall(r"(\d+)([hms])", text))
    return 3600 * parts.get("h", 0) + 60 * parts.get("m", 0) + parts.get("s", 0)


def load() -> str:
    path = Path("/proc/loadavg")
    return path.read_text().split(" ", 1)[0] if path.is_file() else "?"


def quickstart(args: argparse.Namespace, cache: Path, out: Path) -> dict[str, float]:
    """One `codetune quickstart`: wall and CPU seconds, and the wall seconds of each stage."""
    command = [sys.executable, "-m", "codetune", "quickstart", "--out", str(out)]
    if args.adapt_steps:
        command += ["--adapt-steps", str(args.adapt_steps)]
    if args.samples:
        command += ["--samples", str(args.samples)]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    env = {**os.environ, "CODETUNE_CACHE": str(cache)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"quickstart failed:\n{done.stderr[-3000:]}")
    found = FINISHED.search(done.stderr.replace("\n", " "))
    if found is None:
        sys.exit(f"the quickstart did not print its stage times:\n{done.stderr[-3000:]}")
    times = {name: seconds(value) for name, value in re.findall(r"(\w+) (\S+?)(?:,|$)", found["stages"])}
    times["start"] = max(0.0, wall - sum(times.values()))
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(f"  {gains(out)}", flush=True)
    return {**times, "wall": wall, "cpu": cpu}


def gains(out: Path) -> str:
    """The report's two leading edit similarities, base -> tuned (the gain the README quotes)."""
    models = json.loads((out / "report" / "report.json").read_text())["models"]
    parts = []
    for label, score in (("line completion", "edit_sim"), ("editor replay", "editor_edit_sim")):
        base, tuned = models["base"][score], models["tuned"][score]
        parts.append(f"{label} edit similarity {base:.2f} -> {tuned:.2f} ({tuned - base:+.2f})")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="cold + warm pairs (medians are printed)")
    parser.add_argument("--adapt-steps", type=int, help="quickstart --adapt-steps (default: its own)")
    parser.add_argument("--samples", type=int, help="quickstart --samples (default: its own)")
    parser.add_argument("--seed", type=int, help="quickstart --seed (default: its own)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per quickstart run")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    for number in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache"
            for kind in ("cold", "warm"):
                print(f"run {number + 1} {kind}: load {load()} before", flush=True)
                runs[kind].append(quickstart(args, cache, Path(tmp) / f"out-{kind}"))
    columns = [*STAGES, "start", "wall", "cpu"]
    print(f"{'':6s}" + "".join(f"{name:>9s}" for name in columns) + "   (seconds, median of runs)")
    medians = {}
    for kind, results in runs.items():
        medians[kind] = {name: statistics.median(r.get(name, 0.0) for r in results) for name in columns}
        print(f"{kind:6s}" + "".join(f"{medians[kind][name]:9.0f}" for name in columns))
    warm, cold = medians["warm"]["wall"], medians["cold"]["wall"]
    print(f"warm: {warm / GOALS['warm']:.2f}x of its goal ({warm:.0f} s against {GOALS['warm']:.0f} s)")
    print(f"ratio: {cold / GOALS['cold']:.2f}x cold quickstart wall time vs the 5-minute goal ({cold:.0f} s)")


if __name__ == "__main__":
    main()
