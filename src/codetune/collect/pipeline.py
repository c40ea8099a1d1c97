"""The collect stage, in the order ``_collect`` runs it:

1. list: fetch every source (clone, update, unpack) and list its candidate files (``walk``);
2. skip the stage when the corpus (and a ``--rejected`` folder) already match this input;
3. process: read, strip, filter and redact each file in worker processes, one chunk per task, saving
   each finished source in a work folder beside the output so an interrupted run resumes there;
4. deduplicate exact then near duplicates across all sources, count every drop by reason;
5. write the ``--rejected`` folder and the corpus folder (each atomically, at the very end).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from codetune.artifacts import corpus as corpus_artifact
from codetune.artifacts.manifest import (
    check_output_folder,
    manifest_fingerprint,
    read_manifest,
    write_manifest,
)
from codetune.artifacts.paths import REJECTED_INDEX
from codetune.collect.config import CollectConfig
from codetune.collect.encoding import decode_source
from codetune.collect.executor import open_executor
from codetune.collect.filters import FILTERS, Doc, Thresholds, copied_project, run_filters, strip_licence
from codetune.collect.sources import Source
from codetune.errors import ConfigError, InputError
from codetune.files import atomic_dir, fingerprint
from codetune.languages import Language, get_language, register_spec
from codetune.progress import StepProgress, activity
from codetune.stage import StageResult

log = logging.getLogger(__name__)


@dataclass
class FileContext:
    """Everything a worker needs to judge one file."""

    language: Language
    thresholds: Thresholds
    filters: list[str]
    max_bytes: int
    strip_licence: bool
    redact: bool
    exact_dedup: bool
    near_dedup: bool
    num_perm: int
    ngram: int
    capture_rejected: bool


def _drop(rel: str, repo: str, reason: str, size: int, content: Any = None) -> dict[str, Any]:
    return {"status": reason, "path": rel, "repo": repo, "bytes": size, "content": content}


def process_file(path: str, rel: str, repo: str, ctx: FileContext) -> dict[str, Any]:
    """Read, decode, strip, filter and redact one file; return a kept record or a drop with its reason."""
    try:
        size = os.stat(path).st_size
    except OSError as error:
        return _drop(rel, repo, "symlink_loop" if error.errno == errno.ELOOP else "unreadable", 0)
    if size > ctx.max_bytes:
        return _drop(rel, repo, "too_large", size)
    try:
        with open(path, "rb") as handle:
            data = handle.read(ctx.max_bytes + 1)
    except OSError:
        return _drop(rel, repo, "unreadable", size)
    if len(data) > ctx.max_bytes:
        return _drop(rel, repo, "too_large", len(data))
    capture = data if ctx.capture_rejected else None
    text, encoding = decode_source(data)
    if text is None:
        return _drop(rel, repo, encoding, len(data), capture)
    record = process_text(text, rel, repo, ctx, len(data))
    if encoding != "utf-8":
        record["encoding"] = encoding
    if ctx.capture_rejected:  # --rejected copies hold the file as it was, not the cleaned text
        record["content" if record["status"] is not None else "original"] = data
    return record


def process_text(text: str, rel: str, repo: str, ctx: FileContext, size: int | None = None) -> dict[str, Any]:
    """The text half of :func:`process_file` (also used for docs records and the benchmark baseline)."""
    size = len(text.encode("utf-8")) if size is None else size
    # Windows and classic Mac line ends both become \n.
    text = original = text.replace("\r\n", "\n").replace("\r", "\n")
    stripped = False
    if ctx.strip_licence:
        text, stripped = strip_licence(text, ctx.language)
    doc = Doc(rel, repo, text, ctx.language, meta={"original": original})
    reason = run_filters(doc, ctx.filters, ctx.thresholds)
    if reason is not None:
        return _drop(rel, repo, reason, size, text.encode("utf-8") if ctx.capture_rejected else None)
    redactions: dict[str, int] = {}
    if ctx.redact:
        from codetune.collect.secrets import redact_code

        text, redactions, broke = redact_code(text, ctx.language, rel)
        if broke:
            return _drop(
                rel, repo, "redaction_broke_syntax", size, text.encode() if ctx.capture_rejected else None
            )
    record: dict[str, Any] = {
        "status": None,
        "path": rel,
        "repo": repo,
        "content": text,
        "orig_bytes": size,
        "bytes": len(text.encode("utf-8")),
        "lines": text.count("\n") + (0 if text.endswith("\n") else 1),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "licence_stripped": stripped,
        "redactions": redactions,
        "copied_from": copied_project(repo, original, ctx.language) if "vendored" in ctx.filters else None,
    }
    if ctx.exact_dedup:
        from codetune.collect.dedup import exact_key

        record["exact"] = exact_key(text)
    if ctx.near_dedup:
        from codetune.collect.dedup import minhash_values

        record["minhash"] = minhash_values(
            text, ctx.num_perm, ctx.ngram
        ).tobytes()  # cheap to send to workers
    return record


_WORKER_CTX: FileContext | None = None


def _init_worker(ctx: FileContext, specs: list[dict[str, Any]]) -> None:
    global _WORKER_CTX
    from codetune.schema import LanguageSpec

    for spec in specs:
        register_spec(LanguageSpec(**spec))
    _WORKER_CTX = ctx


def _process_chunk(chunk: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    assert _WORKER_CTX is not None
    return [process_file(path, rel, repo, _WORKER_CTX) for path, rel, repo in chunk]


def make_context(cfg: CollectConfig, language: Language) -> FileContext:
    """Build the worker context from a config, checking filter names."""
    unknown = [name for name in cfg.filters if name not in FILTERS]
    if unknown:
        raise ConfigError(f"unknown filter(s) {', '.join(unknown)}; known: {', '.join(sorted(FILTERS))}")
    return FileContext(
        language=language,
        thresholds=Thresholds.from_config(cfg, language.name),
        filters=list(cfg.filters),
        max_bytes=cfg.max_bytes,
        strip_licence=cfg.strip_licence,
        redact=cfg.redact,
        exact_dedup=cfg.exact_dedup,
        near_dedup=cfg.near_dedup,
        num_perm=cfg.num_perm,
        ngram=cfg.ngram,
        capture_rejected=cfg.rejected is not None,
    )


# ---- The stage -----------------------------------------------------------------------------------


@dataclass
class Listed:
    """A fetched source and the files found in it (for docs: the crawled blocks)."""

    source: Source
    files: list[Any]
    problems: Counter[str]
    signature: str


@dataclass
class Processed:
    """The records of one source: kept ones (status None) and drops with their reasons."""

    source: Source
    records: list[dict[str, Any]]
    problems: Counter[str]


def _config_identity(cfg: CollectConfig, language: Language) -> dict[str, Any]:
    data = cfg.model_dump(
        mode="json",
        exclude={"out", "force", "workers", "chunk_size", "rejected", "cache_dir", "executor", "address"},
    )
    data["language_def"] = [
        language.name,
        list(language.extensions),
        language.grammar,
        list(language.unit_types),
        [list(pair) for pair in language.extension_grammars],
    ]
    return data


def _listing_signature(files: list[tuple[str, str]], commit: str | None = None) -> str:
    digest = hashlib.sha256(f"{commit or ''}\n".encode())
    for path, rel in files:
        try:
            info = os.stat(path)
            digest.update(f"{rel}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{rel}\0?\n".encode())
    return digest.hexdigest()[:16]


def collect(cfg: CollectConfig) -> StageResult:
    """Run the collect stage and write the corpus folder; see the module docstring."""
    out = Path(cfg.out) if cfg.out is not None else Path("corpus")
    check_output_folder(out, stage="collect")  # before hours of work, not when the corpus is written
    if cfg.rejected is not None:
        check_output_folder(cfg.rejected, "--rejected", "collect --rejected")
    work = out.parent / f".{out.name}.work"
    try:
        return _collect(cfg, out, work)
    finally:
        # Keep the work folder only when it holds something to resume from.
        if work.is_dir() and not any(work.iterdir()):
            work.rmdir()


def _collect(cfg: CollectConfig, out: Path, work: Path) -> StageResult:
    language = _setup_language(cfg)
    ctx = make_context(cfg, language)
    identity = _config_identity(cfg, language)
    listed = list_sources(cfg, language, work)
    fp = fingerprint(identity, [(item.source.key, item.signature) for item in listed])
    if _up_to_date(cfg, out, fp):
        shutil.rmtree(work, ignore_errors=True)
        summary = read_manifest(out, "corpus folder").get("summary", {})
        if cfg.rejected is not None:
            summary["rejected"] = f"{cfg.rejected} (unchanged)"
        return StageResult("collect", out, summary=summary, skipped=True)
    processed = process_sources(cfg, ctx, listed, identity, work)
    _drop_copies(processed)
    with activity(f"collect: deduplicating {sum(len(item.records) for item in processed):,} files"):
        kept, dropped = _dedup(cfg, processed)
    counts, skipped = _count(dropped, processed)
    redactions = _redactions(kept)
    summary = _summary(language, kept, counts, skipped, redactions)
    if cfg.rejected is not None:
        _write_rejected(Path(cfg.rejected), dropped, fp)
        summary["rejected"] = str(cfg.rejected)
    if not kept:
        shutil.rmtree(work, ignore_errors=True)
        raise InputError(
            f"no files of {language.name} kept from {', '.join(cfg.sources)} "
            f"(seen {summary['files seen']}; dropped: {_reasons_line(counts)})"
        )
    _write_corpus(out, cfg, fp, language, listed, kept, counts, skipped, redactions, summary)
    shutil.rmtree(work, ignore_errors=True)
    return StageResult("collect", out, summary=summary)


def _setup_language(cfg: CollectConfig) -> Language:
    for spec in cfg.languages:
        register_spec(spec)
    if not cfg.sources:
        raise InputError("no sources given: pass folders, git URLs, archives, github:QUERY or docs:URL")
    return get_language(cfg.language)


def list_sources(cfg: CollectConfig, language: Language, work: Path) -> list[Listed]:
    """Fetch every source and list its files (cheap next to processing), so the fingerprint is known."""
    from codetune.collect.sources import resolve_sources
    from codetune.collect.walk import walk_files

    listed = []
    for source in resolve_sources(cfg, work):
        if source.kind == "docs":
            from codetune.collect.docs import crawl

            pages = crawl(source.origin, cfg, work / f"docs-{source.key}.json")
            listed.append(Listed(source, pages, Counter(), fingerprint(pages)))
            continue
        root = source.fetch()
        files, problems = walk_files(root, language, cfg, use_git=source.use_git)
        problems.update(source.extra.get("skipped", {}))
        listed.append(Listed(source, files, problems, _listing_signature(files, source.extra.get("commit"))))
    return listed


def _up_to_date(cfg: CollectConfig, out: Path, fp: str) -> bool:
    """Whether the corpus (and the --rejected folder, when asked for) already match this run."""
    if cfg.force or manifest_fingerprint(out) != fp:
        return False
    if cfg.rejected is not None and manifest_fingerprint(cfg.rejected) != fp:
        from rich.console import Console

        Console(stderr=True, soft_wrap=True).print(
            f"collect: corpus unchanged; processing again to write --rejected {cfg.rejected}",
            highlight=False,
        )
        return False
    return True


def process_sources(
    cfg: CollectConfig, ctx: FileContext, listed: list[Listed], identity: dict[str, Any], work: Path
) -> list[Processed]:
    """Judge every file of every source, resuming sources finished by an earlier, interrupted run."""
    specs = [spec.model_dump() for spec in cfg.languages]
    pool = None
    results: list[Processed] = []
    try:
        for index, item in enumerate(listed):
            source = item.source
            done = work / f"source-{fingerprint(identity, source.key, item.signature)}.jsonl"
            records = _load_records(done) if done.is_file() else None
            if records is not None:
                log.info("resuming: %s already processed", source.origin)
            elif source.kind == "docs":
                from codetune.collect.docs import process_docs

                records = process_docs(item.files, source.repo, ctx)
            else:
                items = [(path, rel, source.repo) for path, rel in item.files]
                chunks = [items[i : i + cfg.chunk_size] for i in range(0, len(items), cfg.chunk_size)]
                if cfg.executor == "ray" or (cfg.workers > 1 and len(chunks) > 1):
                    if pool is None:
                        pool = open_executor(
                            cfg.executor, cfg.workers, cfg.address, _init_worker, (ctx, specs)
                        )
                    done_chunks = pool.map(_process_chunk, chunks)
                else:
                    _init_worker(ctx, [])
                    done_chunks = map(_process_chunk, chunks)
                records = []
                with StepProgress(f"collect {source.repo}", len(items), unit="file") as bar:
                    for chunk in done_chunks:
                        records += chunk
                        bar.advance(len(chunk))
                if index < len(listed) - 1:  # the last source never needs resuming from
                    _save_records(done, records)
            for record in records:
                record["source"] = source.origin
            results.append(Processed(source, records, item.problems))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return results


# A finished source's records in the work folder: JSON lines, bytes as {"$bytes": base64}. Never a
# pickle: the work folder sits beside the output, and a planted pickle would run code when loaded.
_BYTES = "$bytes"


def _save_records(path: Path, records: list[dict[str, Any]]) -> None:
    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return {_BYTES: base64.b64encode(value).decode("ascii")}
        raise TypeError(f"cannot store {type(value).__name__} in the resume cache")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, default=plain, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _load_records(path: Path) -> list[dict[str, Any]] | None:
    """A finished source's records, or None (processed again) when the file is not what
    :func:`_save_records` writes."""

    def revive(item: dict[str, Any]) -> Any:
        return base64.b64decode(item[_BYTES]) if item.keys() == {_BYTES} else item

    try:
        with path.open(encoding="utf-8") as handle:
            records = [json.loads(line, object_hook=revive) for line in handle if line.strip()]
    except (OSError, ValueError):
        log.warning("resume cache %s is unreadable; processing that source again", path)
        return None
    if not all(isinstance(r, dict) for r in records):
        log.warning("resume cache %s is not a list of records; processing that source again", path)
        return None
    return records


def _count(
    dropped: list[dict[str, Any]], processed: list[Processed]
) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Files and bytes per drop reason, and files left out before reading per skip reason."""
    from codetune.collect.walk import SKIP_REASONS

    counts: dict[str, dict[str, int]] = {}
    for record in dropped:
        entry = counts.setdefault(record["status"], {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += record["bytes"]
    skipped: Counter[str] = Counter()
    for item in processed:
        for reason, n in item.problems.items():
            if reason in SKIP_REASONS:
                skipped[reason] += n
            else:
                counts.setdefault(reason, {"files": 0, "bytes": 0})["files"] += n
    return dict(sorted(counts.items())), dict(sorted(skipped.items()))


def _redactions(kept: list[dict[str, Any]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for record in kept:
        total.update(record["redactions"])
    return dict(sorted(total.items()))


def _conversions(kept: list[dict[str, Any]]) -> dict[str, int]:
    """Kept files per encoding they were converted from to UTF-8 (UTF-16, Latin-1)."""
    return dict(sorted(Counter(r["encoding"] for r in kept if r.get("encoding")).items()))


def _summary(
    language: Language,
    kept: list[dict[str, Any]],
    counts: dict[str, dict[str, int]],
    skipped: dict[str, int],
    redactions: dict[str, int],
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "language": language.name,
        "files seen": len(kept) + sum(entry["files"] for entry in counts.values()),
        "files kept": len(kept),
        "bytes kept": sum(r["bytes"] for r in kept),
    }
    for reason, entry in counts.items():
        summary[f"dropped: {reason}"] = f"{entry['files']} files, {entry['bytes']} bytes"
    for reason, n in skipped.items():
        summary[f"skipped: {reason}"] = f"{n} files"
    for kind, n in sorted(redactions.items()):
        summary[f"redacted: {kind}"] = n
    for encoding, n in _conversions(kept).items():
        summary[f"converted from {encoding}"] = f"{n} files"
    summary["licence headers stripped"] = sum(1 for r in kept if r["licence_stripped"])
    return summary


def _write_corpus(
    out: Path,
    cfg: CollectConfig,
    fp: str,
    language: Language,
    listed: list[Listed],
    kept: list[dict[str, Any]],
    counts: dict[str, dict[str, int]],
    skipped: dict[str, int],
    redactions: dict[str, int],
    summary: dict[str, Any],
) -> None:
    summary["shards"] = corpus_artifact.shard_count(len(kept), cfg.shard_rows)
    manifest = {
        "stage": "collect",
        "fingerprint": fp,
        "language": language.name,
        "sources": [
            {
                "source": item.source.origin,
                "kind": item.source.kind,
                "repo": item.source.repo,
                "files": len(item.files),
                **item.source.extra,
            }
            for item in listed
        ],
        "config": cfg.model_dump(mode="json"),
        "counts": {"kept": len(kept), "dropped": counts, "skipped": skipped},
        "totals": {
            "files_seen": summary["files seen"],
            "files_kept": len(kept),
            "files_dropped": sum(e["files"] for e in counts.values()),
            "bytes_kept": summary["bytes kept"],
            "bytes_dropped": sum(e["bytes"] for e in counts.values()),
        },
        "redactions": redactions,
        "converted": _conversions(kept),
        "licence_stripped": summary["licence headers stripped"],
        "summary": summary,
    }
    corpus_artifact.write_corpus(out, _corpus_rows(kept, language.name), manifest, cfg.shard_rows)


def _reasons_line(counts: dict[str, dict[str, int]]) -> str:
    return ", ".join(f"{reason} {entry['files']}" for reason, entry in counts.items()) or "nothing"


# A repository where at least this share of the kept files carries a project's banner is that project
# (or its organisation's): its banner files are its own, not copies.
COPY_MAJORITY = 0.8


def _drop_copies(processed: list[Processed]) -> None:
    """Mark kept files carrying a well-known project's banner (``copied_from``) as ``vendored``, unless
    most of their repository carries it; cross-file, so after every file is judged."""
    by_repo: dict[str, list[dict[str, Any]]] = {}
    for item in processed:
        for record in item.records:
            if record["status"] is None:
                by_repo.setdefault(record["repo"], []).append(record)
    for records in by_repo.values():
        projects = Counter(r["copied_from"] for r in records if r.get("copied_from"))
        for project, n in projects.items():
            if n >= COPY_MAJORITY * len(records):
                continue
            for record in records:
                if record.get("copied_from") == project:
                    record.update(status="vendored", bytes=record["orig_bytes"])


def _dedup(cfg: CollectConfig, results: list[Processed]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    by_exact: dict[str, dict[str, Any]] = {}
    for item in results:
        for record in item.records:
            if record["status"] is not None:
                dropped.append(record)
                continue
            key = record.get("exact")
            if key is not None and key in by_exact:
                first = by_exact[key]
                record.update(
                    status="exact_duplicate",
                    duplicate_of=f"{first['repo']}/{first['path']}",
                    bytes=record["orig_bytes"],
                )
                dropped.append(record)
                continue
            if key is not None:
                by_exact[key] = record
            kept.append(record)
    if cfg.near_dedup and kept:
        from codetune.collect.dedup import near_duplicates

        signatures = ((i, r["minhash"]) for i, r in enumerate(kept))
        if cfg.executor == "ray":
            from codetune.collect.executor import ray_near_duplicates

            texts = [r["content"] for r in kept]
            dupes = ray_near_duplicates(
                signatures, cfg.near_threshold, cfg.num_perm, texts, cfg.ngram, cfg.address
            )
        else:
            dupes = near_duplicates(
                signatures,
                cfg.near_threshold,
                cfg.num_perm,
                text_of=lambda i: kept[i]["content"],
                ngram=cfg.ngram,
            )
        survivors = []
        for i, record in enumerate(kept):
            if i in dupes:
                first = kept[dupes[i]]
                record.update(
                    status="near_duplicate",
                    duplicate_of=f"{first['repo']}/{first['path']}",
                    bytes=record["orig_bytes"],
                )
                dropped.append(record)
            else:
                survivors.append(record)
        kept = survivors
        # A build bundle concatenating modules kept here duplicates them without being a near twin.
        from codetune.collect.dedup import contained_bundles

        bundles = contained_bundles([(r["repo"], r["content"]) for r in kept], cfg.ngram)
        for i, parts in bundles.items():
            first = kept[parts[0]]
            kept[i].update(
                status="bundle", duplicate_of=f"{first['repo']}/{first['path']}", bytes=kept[i]["orig_bytes"]
            )
            dropped.append(kept[i])
        kept = [r for i, r in enumerate(kept) if i not in bundles]
    return kept, dropped


def _corpus_rows(kept: list[dict[str, Any]], language: str) -> list[dict[str, Any]]:
    """Collect's records as corpus rows (the columns of codetune.artifacts.corpus)."""
    return [
        {
            "path": r["path"],
            "repo": r["repo"],
            "language": language,
            "content": r["content"],
            "bytes": r["bytes"],
            "lines": r["lines"],
            "sha256": r["sha256"],
            "source": r.get("source"),
            "kind": r.get("kind", "code"),
            "licence_stripped": r["licence_stripped"],
            "redactions": sum(r["redactions"].values()),
            "heading": r.get("heading"),
            "prose": r.get("prose"),
            "url": r.get("url"),
        }
        for r in kept
    ]


def _write_rejected(folder: Path, dropped: list[dict[str, Any]], fp: str) -> None:
    """Every dropped file as it was read, one folder per reason, indexed by rejected.jsonl."""
    import json

    with atomic_dir(
        folder, check=partial(check_output_folder, flag="--rejected", stage="collect --rejected")
    ) as tmp:
        lines = []
        for record in dropped:
            entry = {k: record.get(k) for k in ("repo", "path", "status", "bytes", "duplicate_of", "source")}
            entry["reason"] = entry.pop("status")
            content = record.get("original", record.get("content"))
            if isinstance(content, str):
                content = content.encode("utf-8")
            if content is not None:
                target = tmp / entry["reason"] / _safe_rel(record["repo"]) / _safe_rel(record["path"])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
                entry["file"] = str(target.relative_to(tmp))
            lines.append(json.dumps(entry))
        (tmp / REJECTED_INDEX).write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
        write_manifest(tmp, {"stage": "collect --rejected", "fingerprint": fp, "files": len(lines)})


def _safe_rel(text: str) -> str:
    parts = [p for p in str(text).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "_"
