"""serve --repo: how long the event loop stalls while a changed repository is indexed again.

    python bench/repo_refresh.py [--files 2000] [--lines 120]

A generated repository (``--files`` Python modules of ``--lines`` lines, a few hundred identifiers
each) is indexed once, one file is edited, and the refresh runs while a ticker coroutine wakes every
5 ms on the same event loop, as the server's other requests would. The stall is the longest gap
between two ticks beyond those 5 ms. Two ways: the refresh called on the loop (how the server did it
before), and ``ServedRepos.refreshed()`` (the scan and the index build in a worker thread, the old
index serving meanwhile). The last line compares the stalls.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

WORDS = ["total", "value", "item", "scale", "offset", "config", "result", "index", "count", "name"]


def make_repo(root: Path, files: int, lines: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    for f in range(files):
        folder = root / f"pkg{f % 40}"
        folder.mkdir(parents=True, exist_ok=True)
        body = []
        for i in range(lines // 4):
            a, b = rng.sample(WORDS, 2)
            body += [
                f"def {a}_{b}_{f}_{i}({a}, {b}):",
                f"    {a}Count = {a} + {b} * {rng.randint(1, 99)}",
                f"    return {a}Count",
                "",
            ]
        (folder / f"module_{f}.py").write_text("\n".join(body) + "\n")


async def stall_during(refresh, interval: float = 0.005) -> tuple[float, float]:
    """(longest gap between ticks beyond ``interval``, seconds the refresh took), both in seconds."""
    done = asyncio.Event()
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(interval)
            now = time.perf_counter()
            worst = max(worst, now - last - interval)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(interval * 3)  # the ticker is running before the refresh starts
    started = time.perf_counter()
    await refresh()
    took = time.perf_counter() - started
    done.set()
    await tick
    return worst, took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=120)
    args = parser.parse_args()

    from codetune.serve.repos import ServedRepos

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "big"
        make_repo(root, args.files, args.lines)
        started = time.perf_counter()
        repos = ServedRepos([root], refresh_s=0)
        print(f"initial index: {args.files} files, {time.perf_counter() - started:.2f} s")
        edited = root / "pkg0" / "module_0.py"
        results = {}
        for way in ("on the loop", "worker thread"):
            edited.write_text(edited.read_text() + f"\n# edit {way}\n")

            async def refresh(way: str = way) -> None:
                if way == "on the loop":
                    repos.refresh()  # what the server did before: the whole re-index blocks the loop
                else:
                    await repos.refreshed()

            stall, took = asyncio.run(stall_during(refresh))
            results[way] = stall
            print(f"{way}: refresh {took * 1000:.0f} ms, longest loop stall {stall * 1000:.1f} ms")
        ratio = results["on the loop"] / max(results["worker thread"], 1e-4)
        print(f"ratio: {ratio:.2f}x event-loop stall during a re-index, on the loop vs in a worker thread")


if __name__ == "__main__":
    main()
