"""`codetune generate`: complete every prompt of a JSONL file, resumably.

Each output line is the input row plus the completion, appended (and flushed) as soon as its batch
finishes; a killed job leaves at most one partial last line, which the next run drops before
skipping the ids already written. Under `accelerate launch` each process takes every k-th row into
its own part file, and the main process merges the parts when all are done.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from codetune.errors import ConfigError, InputError
from codetune.generation.params import InvalidParams, SamplingParams
from codetune.inference.config import GenerateConfig
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


def done_ids(path: Path, id_field: str) -> set[str]:
    """Ids already written to ``path``; a partial last line (a killed run) is cut off first."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as handle:
            handle.truncate(end)
        logger.warning("dropped a partial last line in %s", path)
    ids = set()
    for line in data[:end].decode("utf-8").splitlines():
        if line.strip():
            try:
                ids.add(json.dumps(json.loads(line)[id_field]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(
                    f"{path} has a line that is not a result row; remove it or pick another --out"
                ) from None
    return ids


class _Appender:
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
    params = SamplingParams(
        max_new_tokens=cfg.max_new_tokens,
        min_new_tokens=cfg.min_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        repetition_penalty=cfg.repetition_penalty,
        num_beams=cfg.num_beams,
        n=cfg.n,
        stop=list(cfg.stop),
        truncate_before_pattern=list(cfg.truncate_before_pattern),
        seed=cfg.seed,
    )
    try:
        params.check()
    except InvalidParams as error:
        raise ConfigError(f"invalid generate options: {error}") from None
    return params


def _shard() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    return rank, world


def _part(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.stem}.part{rank}{out.suffix}")


def generate_file(cfg: GenerateConfig) -> StageResult:
    """Complete each row of ``cfg.input`` into ``cfg.out``, skipping ids already there."""
    if cfg.input is None or cfg.out is None:
        raise ConfigError("generate needs an input file and an output file")
    params = sampling_params(cfg)
    rows = read_rows(Path(cfg.input), cfg)
    out = Path(cfg.out)
    rank, world = _shard()
    target = out if world == 1 else _part(out, rank)
    finished = done_ids(out, cfg.id_field) | (done_ids(target, cfg.id_field) if target != out else set())
    todo = [(key, row) for k, (key, row) in enumerate(rows) if k % world == rank and key not in finished]
    start = time.monotonic()
    tokens = 0
    if todo:
        run = _vllm_rows if cfg.engine == "vllm" else _hf_rows
        appender = _Appender(target)
        try:
            with _progress(len(todo)) as advance:
                for row, completions in run(cfg, params, [row for _, row in todo]):
                    appender.write(_result_row(cfg, row, completions))
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


def _result_row(cfg: GenerateConfig, row: dict[str, Any], completions: list[Any]) -> dict[str, Any]:
    result = dict(row)
    if cfg.n == 1:
        result[cfg.output_field] = completions[0].text
        result["finish_reason"] = completions[0].finish_reason
    else:
        result[cfg.output_field + "s"] = [c.text for c in completions]
        result["finish_reasons"] = [c.finish_reason for c in completions]
    result["new_tokens"] = sum(len(c.token_ids) for c in completions)
    return result


def _requests(
    cfg: GenerateConfig,
    params: SamplingParams,
    rows: list[dict[str, Any]],
    tokenizer: Any,
    model: Any,
    context: int | None = None,
) -> list[Any]:
    """One request per row, built as the server builds them (trimming, FIM, post-processing); without
    a loaded model (vLLM) ``context`` gives the length to trim to."""
    from codetune.generation.request import RequestError, build_request
    from codetune.generation.sequence import context_length, is_seq2seq
    from codetune.languages import language_for_path

    requests = []
    for row in rows:
        language = row.get("language") if isinstance(row.get("language"), str) else None
        if language is None and isinstance(row.get("path"), str):
            found = language_for_path(row["path"])
            language = found.name if found else None
        try:
            requests.append(
                build_request(
                    tokenizer,
                    prompt_of(row, cfg),
                    row.get(cfg.suffix_field),
                    params,
                    context=context_length(model) if model is not None else context,
                    seq2seq=model is not None and is_seq2seq(model),
                    postprocess=cfg.postprocess,
                    language=language,
                )
            )
        except RequestError as error:
            raise InputError(f"row {row.get(cfg.id_field)!r}: {error}") from None
    return requests


def _hf_rows(
    cfg: GenerateConfig, params: SamplingParams, rows: list[dict[str, Any]]
) -> Iterator[tuple[dict[str, Any], list[Any]]]:
    import torch

    from codetune.generation.api import complete_requests
    from codetune.generation.engines import engine_for
    from codetune.modeling.loading import default_device, load_model, load_tokenizer, resolve_model

    ref = resolve_model(cfg.model, cfg.adapter)
    tokenizer = load_tokenizer(ref)
    device = cfg.device or _accelerate_device() or default_device()
    model = load_model(ref, device=device, dtype=torch.float16 if device.startswith("cuda") else None)
    requests = _requests(cfg, params, rows, tokenizer, model)
    engine = engine_for(
        model,
        tokenizer,
        max_batch_size=cfg.batch_size,
        kv_token_budget=cfg.token_budget,
        token_budget=cfg.token_budget,
    )
    for i, completions in complete_requests(engine, requests):
        yield rows[i], completions


def _accelerate_device() -> str | None:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return str(PartialState().device)


def _vllm_rows(
    cfg: GenerateConfig, params: SamplingParams, rows: list[dict[str, Any]]
) -> Iterator[tuple[dict[str, Any], list[Any]]]:
    """The same rows through vLLM, behind the same engine interface and request builder."""
    from codetune.generation.api import complete_requests
    from codetune.generation.engines.vllm import VllmEngine
    from codetune.inference.vllm_checks import check_vllm_model, check_vllm_params, pin_rank_gpu, vllm_context
    from codetune.modeling.loading import load_tokenizer, resolve_model

    ref = resolve_model(cfg.model, cfg.adapter)
    check_vllm_model(ref)
    check_vllm_params(params)
    tokenizer = load_tokenizer(ref)
    requests = _requests(cfg, params, rows, tokenizer, None, vllm_context(ref))  # bad rows fail before vLLM
    pin_rank_gpu()
    engine = VllmEngine.load(ref, tokenizer, max_batch_size=cfg.batch_size)
    for i, completions in complete_requests(engine, requests):
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
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """Progress over rows, showing new tokens per second: ``advance(new_tokens)`` after each row."""
    from codetune.progress import StepProgress

    tokens = 0
    with StepProgress("generate", total, unit="row") as bar:

        def advance(new_tokens: int) -> None:
            nonlocal tokens
            tokens += new_tokens
            bar.advance(tokens=tokens)

        yield advance
