"""Build time with repository context against the same build without it.

    python bench/build_context.py [--corpus DIR] [--files 400] [--format files] [--model tiny-starcoder2]

Corpus: a `codetune collect` output (``--corpus``; the numbers below are of real repositories), else
Python standard-library files written as a corpus, one repository per top-level package (as
bench/build.py makes it). Each build is the whole `codetune build` command in a fresh process, run
``--repeats`` times, alternating with and without ``--repo-context``; the fastest run of each counts
(other jobs share this machine). Reported: wall seconds and CPU seconds (user + system, tokenizer
threads included) of each; the last line is the ratio of CPU seconds, the steadier of the two on a
shared machine.

Measured (December 2026, 2 shared CPU cores, files format, tiny-starcoder2, max_length 512), CPU s
without -> with: square/okio (316 Kotlin files) 6.3 -> 8.4 (1.34x; 1.54x before, 25x first);
okio + sqldelight + coil (1,439 Kotlin files) 11.8 -> 19.0 (1.61x; 1.93x before); Kong (1,260 Lua
files, one repository) 19.7 -> 36.2 (1.84x; 2.51x before). docs/build.md#repository-context has
the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def stdlib_corpus(folder: Path, files: int) -> Path:
    """bench/build.py's corpus of standard-library files."""
    spec = importlib.util.spec_from_file_location("bench_build", HERE / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_corpus(module.corpus_files(files), folder)
    return folder


def timed_build(corpus: Path, out: Path, args: argparse.Namespace, context: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `codetune build` in a fresh process."""
    command = [
        sys.executable,
        "-m",
        "codetune",
        "build",
        str(corpus),
        "--format",
        args.format,
        "--model",
        args.model,
        "--max-length",
        str(args.max_length),
        "--out",
        str(out),
        *(["--repo-context"] if context else []),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None, help="a collect output (default: stdlib files)")
    parser.add_argument("--files", type=int, default=400, help="stdlib files when no --corpus is given")
    parser.add_argument("--format", default="files")
    parser.add_argument("--model", default="tiny-starcoder2")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    with tempfile.TemporaryDirectory(prefix="bench-context-") as tmp:
        corpus = args.corpus or stdlib_corpus(Path(tmp) / "corpus", args.files)
        best: dict[bool, tuple[float, float]] = {}
        for repeat in range(args.repeats):
            for context in (False, True):
                wall, cpu = timed_build(corpus, Path(tmp) / f"ds-{context}-{repeat}", args, context)
                print(
                    f"{'with' if context else 'without'} context: {wall:6.1f} s wall, {cpu:6.1f} s CPU",
                    flush=True,
                )
                if context not in best or cpu < best[context][1]:
                    best[context] = (wall, cpu)
    (wall0, cpu0), (wall1, cpu1) = best[False], best[True]
    print(f"wall: {wall1 / wall0:.2f}x ({wall1:.1f} s vs {wall0:.1f} s)")
    print(
        f"ratio: {cpu1 / cpu0:.2f}x CPU time of `codetune build --repo-context` vs without "
        f"({args.format}, {args.model}, {corpus.name})"
    )


if __name__ == "__main__":
    main()
