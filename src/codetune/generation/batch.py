"""`codetune generate`: complete every prompt of a JSONL file, resumably.

Each output line is the input row plus the completion and ``generated_with`` (a digest of the model,
the settings and the row's prompt), appended (and flushed) as soon as its batch finishes; a killed job
leaves at most one partial last line, which the next run drops before skipping the ids already
written. A row already there counts as done only when it was made from the same prompt, model and
settings: an output file of another run is an error, never a mix of two runs. Under `accelerate launch` each process takes every k-th row into
its own part file, and the main process merges the parts when all are done.

``complete_rows`` runs rows through any registered engine (``codetune.generation.engines``) with
prompts built as the server builds them; the local runner here and the Ray runner
(``codetune.generation.ray``) both call it (``codetune.generation.runners`` picks one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from codetune.errors import ConfigError, InputError
from codetune.generation.config import GenerateConfig
from codetune.generation.params import SamplingParams, params_from
from codetune.stage import StageResult

logger = logging.getLogger(__name__)


def read_rows(path: Path, cfg: GenerateConfig) -> list[tuple[str, dict[str, Any]]]:
    """(id key, row) per input line; InputError naming the line for anything malformed."""
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    rows: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            if cfg.prompt_template is not None:
                try:
                    prompt_of(row, cfg)
                except KeyError as error:
                    raise InputError(
                        f"{path}:{number}: no field {error.args[0]!r} for prompt_template"
                    ) from None
            elif not isinstance(row.get(cfg.prompt_field), str):
                raise InputError(f"{path}:{number}: no string field {cfg.prompt_field!r}")
            suffix = row.get(cfg.suffix_field)
            if suffix is not None and not isinstance(suffix, str):
                raise InputError(f"{path}:{number}: field {cfg.suffix_field!r} must be a string")
            row.setdefault(cfg.id_field, len(rows))
            key = json.dumps(row[cfg.id_field])
            if key in seen:
                raise InputError(f"{path}:{number}: duplicate {cfg.id_field} {row[cfg.id_field]!r}")
            seen.add(key)
            rows.append((key, row))
    return rows


def prompt_of(row: dict[str, Any], cfg: GenerateConfig) -> str:
    """The row's prompt: ``prompt_template`` filled from its fields, else its ``prompt_field``."""
    if cfg.prompt_template is not None:
        return cfg.prompt_template.format_map(row)
    return row[cfg.prompt_field]


# The field of a result row that says what it was made from (see made_from).
MADE_FROM = "generated_with"
# Settings that change how rows are run, not what a row's completion is.
_HOW_NOT_WHAT = {"input", "out", "id_field", "batch_size", "token_budget", "engine", "device"}
_HOW_NOT_WHAT |= {"executor", "address", "engines"}


def made_from(cfg: GenerateConfig, row: dict[str, Any]) -> str:
    """A digest of what a result row is made from: the model, the settings and the row's prompt."""
    what = {
        "settings": cfg.model_dump(mode="json", exclude=_HOW_NOT_WHAT),
        "prompt": prompt_of(row, cfg),
        "suffix": row.get(cfg.suffix_field),
        "language": row.get("language"),
        "path": row.get("path"),
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return f"sha256:{digest[:16]}"


def result_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The result rows already in ``path``; a partial last line (a killed run) is cut off first."""
    if not path.is_file():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as handle:
            handle.truncate(end)
        logger.warning("dropped a partial last line in %s", path)
    for line in data[:end].decode("utf-8").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                raise InputError(
                    f"{path} has a line that is not a result row; remove it or pick another --out"
                )
            yield row


def done_ids(path: Path, id_field: str) -> set[str]:
    """Ids already written to ``path`` (see :func:`result_lines`)."""
    try:
        return {json.dumps(row[id_field]) for row in result_lines(path)}
    except KeyError:
        raise InputError(
            f"{path} has a line that is not a result row; remove it or pick another --out"
        ) from None


def resumed_ids(path: Path, rows: list[tuple[str, dict[str, Any]]], cfg: GenerateConfig) -> set[str]:
    """Ids already done in ``path``, each made from this run's row of that id (same prompt, model and
    settings); InputError when the file holds a row this run would not have written."""
    expected = {key: made_from(cfg, row) for key, row in rows}
    done = set()
    for stored in result_lines(path):
        key = json.dumps(stored.get(cfg.id_field))
        if cfg.id_field not in stored or expected.get(key) != stored.get(MADE_FROM):
            raise InputError(
                f"{path} belongs to another run: its row {cfg.id_field}={stored.get(cfg.id_field)!r} was not "
                f"made from this run's prompt, model and settings ({cfg.input}); pick another --out, "
                "or delete the file to start over"
            )
        done.add(key)
    return done


class Appender:
    """Appends whole lines, flushed at once; fsync at most every second. The file is opened at the
    first row, so a run that fails before any result (a model that does not load) leaves no file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: Any = None
        self.synced = time.monotonic()

    def write(self, row: dict[str, Any]) -> None:
        if self.handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = self.path.open("a", encoding="utf-8")
        self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.handle.flush()
        if time.monotonic() - self.synced > 1.0:
            os.fsync(self.handle.fileno())
            self.synced = time.monotonic()

    def close(self) -> None:
        if self.handle is None:
            return
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


def sampling_params(cfg: GenerateConfig) -> SamplingParams:
    """The decoding settings of a generate config."""
    return params_from(cfg, "generate")


def _shard() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    return rank, world


def _part(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.stem}.part{rank}{out.suffix}")


def generate_file(cfg: GenerateConfig) -> StageResult:
    """Complete each row of ``cfg.input`` into ``cfg.out`` in this process (one part per
    `accelerate launch` rank), skipping ids already there."""
    if cfg.input is None or cfg.out is None:
        raise ConfigError("generate needs an input file and an output file")
    params = sampling_params(cfg)
    rows = read_rows(Path(cfg.input), cfg)
    out = Path(cfg.out)
    rank, world = _shard()
    target = out if world == 1 else _part(out, rank)
    finished = resumed_ids(out, rows, cfg) | (resumed_ids(target, rows, cfg) if target != out else set())
    todo = [(key, row) for k, (key, row) in enumerate(rows) if k % world == rank and key not in finished]
    start = time.monotonic()
    tokens = 0
    if todo:
        appender = Appender(target)
        try:
            with progress(len(todo)) as advance:
                for row, completions in complete_rows(cfg, params, [row for _, row in todo]):
                    appender.write(result_row(cfg, row, completions))
                    new = sum(len(c.token_ids) for c in completions)
                    tokens += new
                    advance(new)
        finally:
            appender.close()
    if world > 1:
        _merge_parts(out, world, cfg.id_field)
    return generate_result(out, len(rows), len(todo), len(finished), tokens, time.monotonic() - start)


def generate_result(
    out: Path, rows: int, generated: int, skipped: int, tokens: int, seconds: float
) -> StageResult:
    """The summary `generate` prints, for any executor."""
    return StageResult(
        "generate",
        out,
        summary={
            "rows": rows,
            "generated": generated,
            "skipped (already done)": skipped,
            "new tokens": tokens,
            "tokens/s": round(tokens / seconds, 1) if seconds > 0 and tokens else 0.0,
            "seconds": round(seconds, 1),
        },
    )


def result_row(cfg: GenerateConfig, row: dict[str, Any], completions: list[Any]) -> dict[str, Any]:
    result = dict(row)
    if cfg.n == 1:
        result[cfg.output_field] = completions[0].text
        result["finish_reason"] = completions[0].finish_reason
    else:
        result[cfg.output_field + "s"] = [c.text for c in completions]
        result["finish_reasons"] = [c.finish_reason for c in completions]
    result["new_tokens"] = sum(len(c.token_ids) for c in completions)
    result[MADE_FROM] = made_from(cfg, row)
    return result


def complete_rows(
    cfg: GenerateConfig, params: SamplingParams, rows: list[dict[str, Any]]
) -> Iterator[tuple[dict[str, Any], list[Any]]]:
    """Each row with its completions, as they finish, through the configured engine: prompts are built
    as the server builds them (trimming, FIM, post-processing), and a bad row is refused before any
    decoding (before vLLM starts); what an engine refuses, before its model loads."""
    from codetune.generation.engines import engine_class
    from codetune.generation.generator import Generator
    from codetune.generation.request import GenerationRequest, RequestError
    from codetune.languages import language_for_path
    from codetune.modeling.loading import load_tokenizer, resolve_model

    ref = resolve_model(cfg.model, cfg.adapter)
    engine_cls = engine_class(cfg.engine)
    engine_cls.check(ref, params)
    tokenizer = load_tokenizer(ref)
    engine = engine_cls.load(
        ref,
        tokenizer,
        device=cfg.device,
        max_batch_size=cfg.batch_size,
        kv_token_budget=cfg.token_budget,
        token_budget=cfg.token_budget,
    )
    generator = Generator(engine, context=engine.context_length)
    requests = []
    for row in rows:
        language = row.get("language") if isinstance(row.get("language"), str) else None
        if language is None and isinstance(row.get("path"), str):
            found = language_for_path(row["path"])
            language = found.name if found else None
        suffix = row.get(cfg.suffix_field)
        ask = GenerationRequest(
            prompt_of(row, cfg), suffix, params=params, postprocess=cfg.postprocess, language=language
        )
        try:
            requests.append(generator.prepare(ask))
        except RequestError as error:
            raise InputError(f"row {row.get(cfg.id_field)!r}: {error}") from None
    for i, completions in generator.run(requests):
        yield rows[i], completions


def _merge_parts(out: Path, world: int, id_field: str) -> None:
    from accelerate import PartialState

    state = PartialState()
    state.wait_for_everyone()
    if state.is_main_process:
        have = done_ids(out, id_field)
        with out.open("a", encoding="utf-8") as handle:
            for rank in range(world):
                part = _part(out, rank)
                done_ids(part, id_field)  # drops a partial last line
                if not part.is_file():
                    continue
                for line in part.read_text(encoding="utf-8").splitlines():
                    if line.strip() and json.dumps(json.loads(line)[id_field]) not in have:
                        handle.write(line + "\n")
                part.unlink()
    state.wait_for_everyone()


@contextmanager
def progress(total: int) -> Iterator[Callable[[int], None]]:
    """Progress over rows, showing new tokens per second: ``advance(new_tokens)`` after each row."""
    from codetune.progress import StepProgress

    tokens = 0
    with StepProgress("generate", total, unit="row") as bar:

        def advance(new_tokens: int) -> None:
            nonlocal tokens
            tokens += new_tokens
            bar.advance(tokens=tokens)

        yield advance
