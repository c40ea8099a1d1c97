"""Benchmark `codetune build` against the seeds' per-example Python loop.

    python bench/build.py [--files 5000] [--formats files,windows,units] [--num-proc N]

Corpus: Python standard-library files (then, when the stdlib has fewer than --files, other .py files
of the interpreter's lib folder), written as a corpus folder. For each format it times the whole
build stage (load, split, decontaminate, examples, tokenize + FIM, save) and prints examples/s. The
baseline is what the seed projects did: a Python loop that tokenizes one example at a time and
collects dicts (for files and windows). The last line compares files-format throughput.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
MAX_BYTES = 100_000


def corpus_files(n: int) -> list[tuple[str, str, str]]:
    """(repo, path, text) of n .py files: the stdlib first, then the rest of the lib folder."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(root.rglob("*.py"))
    stdlib = [p for p in paths if "site-packages" not in p.parts]
    others = [p for p in paths if "site-packages" in p.parts]
    out = []
    for path in stdlib + others:
        if len(out) >= n:
            break
        try:
            if path.stat().st_size > MAX_BYTES:
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not text.strip():
            continue
        rel = path.relative_to(root).parts
        repo = rel[1] if rel[0] == "site-packages" and len(rel) > 2 else rel[0] if len(rel) > 1 else "stdlib"
        out.append((repo, str(path.relative_to(root)), text))
    return out


def write_corpus(files: list[tuple[str, str, str]], folder: Path) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "path": [f[1] for f in files],
            "repo": [f[0] for f in files],
            "language": ["python"] * len(files),
            "content": [f[2] for f in files],
            "bytes": [len(f[2].encode()) for f in files],
            "lines": [f[2].count("\n") + 1 for f in files],
            "sha256": [hashlib.sha256(f[2].encode()).hexdigest() for f in files],
        }
    )
    pq.write_table(table, folder / "data-00000.parquet")
    (folder / "manifest.json").write_text(
        json.dumps({"fingerprint": "bench", "totals": {"files": len(files)}})
    )


def baseline_files(texts: list[str], tokenizer) -> int:
    """Seed-style: one tokenizer call per file, a list of dicts, then a Dataset."""
    from datasets import Dataset

    rows = []
    for text in texts:
        ids = [*tokenizer(text)["input_ids"][:511], tokenizer.eos_token_id]
        rows.append({"input_ids": ids, "loss_mask": [1] * len(ids), "text": text})
    return len(Dataset.from_list(rows))


def baseline_windows(texts: list[str], tokenizer) -> int:
    """Seed-style (Kotlin): per file, cut windows, then tokenize each prompt and completion apart."""
    from datasets import Dataset

    from codetune.dataset.config import WindowsOptions
    from codetune.dataset.formats.windows import windows

    opts = WindowsOptions()
    rows = []
    for text in texts:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        starts = sorted({s for s, e in enc["offset_mapping"] if e > s})
        for prompt, completion in windows(
            text,
            starts,
            opts.prompt_tokens,
            opts.completion_tokens,
            None,
            opts.snap_chars,
            opts.min_completion_tokens,
        ):
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            c = tokenizer(completion, add_special_tokens=False)["input_ids"]
            rows.append(
                {
                    "input_ids": p + c + [tokenizer.eos_token_id],
                    "loss_mask": [0] * len(p) + [1] * (len(c) + 1),
                    "prompt": prompt,
                    "completion": completion,
                }
            )
    return len(Dataset.from_list(rows))


def codetune_tokenize(texts: list[str], tokenizer) -> int:
    """Only codetune's batched tokenize step (datasets.map over encode_causal), the baseline's work."""
    from functools import partial

    from datasets import Dataset

    from codetune.dataset.encode import EncodeOptions, encode_causal

    data = Dataset.from_dict({"text": texts, "language": ["python"] * len(texts)})
    opts = EncodeOptions(max_length=512, max_target_length=512, overlong="trim", prompted=False, seed=0)
    fn = partial(encode_causal, tokenizer=tokenizer, opts=opts)
    return len(data.map(fn, batched=True, batch_size=256, with_indices=True, new_fingerprint="bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--formats", default="files,windows,units")
    parser.add_argument("--model", default="tiny-gpt-bigcode")
    parser.add_argument("--num-proc", type=int, default=None)
    parser.add_argument("--fim-rate", type=float, default=0.0, help="0: the same work as the baseline.")
    args = parser.parse_args()

    import datasets

    datasets.disable_progress_bars()
    from codetune.dataset.builder import build
    from codetune.dataset.config import BuildConfig
    from codetune.modeling.loading import load_tokenizer

    files = corpus_files(args.files)
    texts = [f[2] for f in files]
    tokenizer = load_tokenizer(args.model)
    print(f"corpus: {len(files)} files, {sum(len(t) for t in texts) / 1e6:.1f} MB, cpus={os.cpu_count()}")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        write_corpus(files, corpus)
        for fmt in args.formats.split(","):
            start = time.perf_counter()
            result = build(
                BuildConfig(
                    corpus=corpus,
                    out=Path(tmp) / fmt,
                    format=fmt,
                    model=args.model,
                    fim_rate=args.fim_rate,
                    num_proc=args.num_proc,
                )
            )
            seconds = time.perf_counter() - start
            examples = sum(v for k, v in result.summary.items() if k.endswith("examples"))
            # `files` splits long files into blocks (the baseline trims them), so compare input files/s.
            results[fmt] = (len(files) if fmt == "files" else examples) / seconds
            print(
                f"codetune {fmt:9s}: {examples:7d} examples in {seconds:6.1f}s = {results[fmt]:8.1f} "
                f"{'input files' if fmt == 'files' else 'examples'}/s "
                f"(whole stage: split, MinHash, FIM {args.fim_rate:.0%}, save)"
            )
        baselines = {"files": baseline_files, "windows": baseline_windows}
        base: dict[str, float] = {}
        for fmt, fn in baselines.items():
            if fmt not in results:
                continue
            start = time.perf_counter()
            examples = fn(texts, tokenizer)
            seconds = time.perf_counter() - start
            base[fmt] = examples / seconds
            print(
                f"baseline {fmt:9s}: {examples:7d} examples in {seconds:6.1f}s = {base[fmt]:8.1f} examples/s "
                "(per-example loop, tokenize only, no split/save)"
            )
    if "files" in base:
        start = time.perf_counter()
        examples = codetune_tokenize(texts, tokenizer)
        step = examples / (time.perf_counter() - start)
        print(
            f"codetune tokenize step only: {step:8.1f} examples/s; {step / base['files']:.2f}x the baseline loop"
        )
    for fmt in base:
        if fmt != "files":
            print(f"{fmt}: {results[fmt] / base[fmt]:.2f}x codetune vs per-example loop")
    key = "files" if "files" in base else next(iter(base))
    unit = "input files/s" if key == "files" else "examples/s"
    print(
        f"ratio: {results[key] / base[key]:.2f}x codetune build ({key}) vs the seeds' per-example Python loop, {unit}"
    )


if __name__ == "__main__":
    main()
