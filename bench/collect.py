"""Benchmark `codetune collect` (worker processes) against a single-process loop of the same steps.

Builds a corpus of >= 20k Python files from copies of the standard library with mutations (renamed
identifiers, added lines, exact copies), then times both on it. Run:

    python bench/collect.py --files 20000 --workers 2

With ``--executor ray`` it times the Ray executor (a local Ray cluster of ``--workers`` CPUs) against
the local process pool on the same tree instead, in alternating rounds, and checks both wrote the same
corpus; the ratio is the warm (steady-state) one, the cold first round is printed above it:

    python bench/collect.py --files 2000 --workers 2 --executor ray --rounds 4
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

IDENT = re.compile(r"\b([a-z_][a-z0-9_]{3,})\b")


def build_tree(root: Path, n_files: int, seed: int = 0, max_lines: int = 0) -> int:
    """Write ``n_files`` mutated copies of stdlib modules under ``root`` (cut to ``max_lines`` lines when
    given, for a many-small-files corpus); return the bytes written."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = []
    for path in sorted(stdlib.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            size = path.stat().st_size
            if 200 < size < 40_000:
                text = path.read_text(encoding="utf-8")
                if max_lines:
                    text = "".join(text.splitlines(keepends=True)[:max_lines])
                sources.append(text)
        except (OSError, UnicodeDecodeError):
            continue
    rng = random.Random(seed)
    written = 0
    for i in range(n_files):
        text = sources[i % len(sources)]
        copy = i // len(sources)
        mode = rng.random()
        if copy and mode < 0.6:  # rename a few identifiers: a near duplicate or a distinct file
            names = list(dict.fromkeys(IDENT.findall(text)))[:200]
            chosen = rng.sample(names, min(len(names), 1 + copy * 3))
            if chosen:
                pattern = re.compile(r"\b(" + "|".join(map(re.escape, chosen)) + r")\b")
                text = pattern.sub(lambda m, c=copy: f"{m.group(1)}_{c}", text)
        elif copy and mode < 0.9:
            text = f"# variant {copy}-{i}\n" + text + f"\n\ndef _extra_{i}(x):\n    return x * {i}\n"
        target = root / f"copy{copy:02d}" / f"f{i:06d}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written += len(text)
    return written


def baseline(src: Path, out: Path) -> int:
    """A plain single-process loop over the same steps: walk, read+filter+redact, dedup, write Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from codetune.collect.config import CollectConfig
    from codetune.collect.dedup import near_duplicates
    from codetune.collect.pipeline import make_context, process_file
    from codetune.collect.walk import walk_files
    from codetune.languages import get_language

    cfg = CollectConfig(sources=[str(src)])
    language = get_language("python")
    ctx = make_context(cfg, language)
    files, _ = walk_files(src, language, cfg)
    kept, seen = [], set()
    for path, rel in files:
        record = process_file(path, rel, src.name, ctx)
        if record["status"] is None and record["exact"] not in seen:
            seen.add(record["exact"])
            kept.append(record)
    dupes = near_duplicates(((i, r["minhash"]) for i, r in enumerate(kept)), cfg.near_threshold, cfg.num_perm)
    kept = [r for i, r in enumerate(kept) if i not in dupes]
    out.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {k: [r[k] for r in kept] for k in ("path", "repo", "content", "bytes", "lines", "sha256")}
    )
    pq.write_table(table, out / "data-00000-of-00001.parquet")
    return len(kept)


def _cpu() -> tuple[float, float]:
    """(this process, finished children) user+sys CPU seconds."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--max-lines", type=int, default=0, help="Cut files to this many lines (small files)."
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--executor", choices=["local", "ray"], default="local", help="ray: time Ray against local."
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="With --executor ray: rounds of (local, ray); the first is cold.",
    )
    args = parser.parse_args()
    if args.executor == "ray":
        ray_vs_local(args)
        return
    sys.setrecursionlimit(10_000)
    from codetune.collect.config import CollectConfig
    from codetune.collect.pipeline import collect

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        src = Path(tmp) / "src"
        start = time.perf_counter()
        size = build_tree(src, args.files, max_lines=args.max_lines)
        print(f"built {args.files} files ({size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f}s")
        import datasketch  # noqa: F401  (import cost paid once, outside both timings)

        start, cpu0 = time.perf_counter(), _cpu()
        kept_base = baseline(src, Path(tmp) / "baseline")
        base_s, base_cpu = time.perf_counter() - start, _cpu()[0] - cpu0[0]
        print(
            f"baseline (1 process): {base_s:.1f}s, {args.files / base_s:.0f} files/s, kept {kept_base}, "
            f"cpu {base_cpu:.1f}s"
        )

        start, cpu1 = time.perf_counter(), _cpu()
        result = collect(
            CollectConfig(sources=[str(src)], out=Path(tmp) / "corpus", workers=args.workers, force=True)
        )
        ours_s = time.perf_counter() - start
        main_cpu, workers_cpu = (after - before for after, before in zip(_cpu(), cpu1, strict=True))
        print(
            f"codetune ({args.workers} workers, cpus={os.cpu_count()}): {ours_s:.1f}s, "
            f"{args.files / ours_s:.0f} files/s, kept {result.summary['files kept']}, "
            f"cpu {main_cpu:.1f}s main + {workers_cpu:.1f}s workers"
        )
        # On a loaded machine wall time says little; CPU time gives what idle cores would allow.
        idle = base_cpu / max(main_cpu + workers_cpu / args.workers, 1e-9)
        print(
            f"load average {os.getloadavg()[0]:.1f}; projected ratio on {args.workers} idle cores: {idle:.2f}x"
        )
    print(
        f"ratio: {base_s / ours_s:.2f}x codetune collect ({args.workers} workers) vs single-process loop, "
        f"files/s on {args.files} files"
    )


def ray_vs_local(args: argparse.Namespace) -> None:
    """files/s of ``--executor ray`` (a local cluster of ``--workers`` CPUs) and of the local pool.

    Runs alternate (local, ray, local, ray, ...) so a shared machine's load falls on both alike. The
    first round is "cold": the local pool forks fresh workers and pays first imports, and Ray's worker
    processes import codetune and the grammars; ``ray.init`` (starting the node) is timed apart. The
    headline is the median of the later, warm rounds: a long-lived cluster pays its startup once.
    """
    import statistics

    import ray

    from codetune.artifacts import read_corpus
    from codetune.collect.config import CollectConfig
    from codetune.collect.pipeline import collect

    rounds = max(2, args.rounds)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        src = Path(tmp) / "src"
        size = build_tree(src, args.files, max_lines=args.max_lines)
        print(f"built {args.files} files ({size / 1e6:.1f} MB)")
        start = time.perf_counter()
        ray.init(
            num_cpus=args.workers,
            object_store_memory=200 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
        )
        init_s = time.perf_counter() - start
        print(f"ray.init (a {args.workers}-CPU node): {init_s:.1f}s")
        seconds: dict[str, list[float]] = {"local": [], "ray": []}
        corpora = {}
        for round_ in range(rounds):
            for executor in ("local", "ray"):
                out = Path(tmp) / executor
                start = time.perf_counter()
                result = collect(
                    CollectConfig(
                        sources=[str(src)], out=out, workers=args.workers, executor=executor, force=True
                    )
                )
                seconds[executor].append(time.perf_counter() - start)
                corpora[executor] = sorted(r["sha256"] + r["path"] for r in read_corpus(out))
                print(
                    f"round {round_} {'(cold)' if round_ == 0 else '(warm)'} {executor}: "
                    f"{seconds[executor][-1]:.1f}s, {args.files / seconds[executor][-1]:.1f} files/s, "
                    f"kept {result.summary['files kept']}, load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        ray.shutdown()
        print(f"same corpus: {corpora['local'] == corpora['ray']}")
    warm = {k: statistics.median(v[1:]) for k, v in seconds.items()}
    cold_ray = init_s + seconds["ray"][0]
    print(
        f"cold (first run; ray's includes ray.init {init_s:.1f}s): local {args.files / seconds['local'][0]:.1f} "
        f"files/s, ray {args.files / cold_ray:.1f} files/s, ratio {seconds['local'][0] / cold_ray:.2f}x"
    )
    print(
        f"warm (median of {rounds - 1} rounds): local {args.files / warm['local']:.1f} files/s, "
        f"ray {args.files / warm['ray']:.1f} files/s"
    )
    print(
        f"ratio: {warm['local'] / warm['ray']:.2f}x files/s, ray vs local, steady state "
        f"(warm workers, ray.init excluded), {args.workers} cpus, {args.files} files"
    )


if __name__ == "__main__":
    main()
