"""`codetune generate --executor ray`: the prompt file over a Ray cluster with Ray Data.

A runner over the same engines as the local path: the rows to do are chosen (and the output resumed)
exactly as :func:`codetune.generation.batch.generate_file` does, then split into one shard per engine;
each Ray task runs :func:`~codetune.generation.batch.complete_rows` on its shard (one engine per task,
one GPU each for vLLM) and streams result rows back, which this process appends to the one output file
as they arrive. A killed run resumes from the ids already written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codetune.errors import ConfigError
from codetune.generation.batch import (
    Appender,
    complete_rows,
    generate_result,
    progress,
    read_rows,
    result_row,
    resumed_ids,
    sampling_params,
)
from codetune.generation.config import GenerateConfig
from codetune.stage import StageResult


def _generate_shard(batch: dict[str, Any], cfg: GenerateConfig, params: Any) -> Iterator[dict[str, Any]]:
    """Run one engine over each shard of ``batch``, yielding each result row as it is done."""
    for shard in batch["rows"]:
        for row, completions in complete_rows(cfg, params, json.loads(shard)):
            yield {
                "line": [json.dumps(result_row(cfg, row, completions), ensure_ascii=False)],
                "tokens": [sum(len(c.token_ids) for c in completions)],
            }


def _uses_gpus(cfg: GenerateConfig) -> bool:
    from codetune.generation.engines import engine_class

    return engine_class(cfg.engine).gpu_only or (cfg.device or "").startswith("cuda")


def _engine_count(ray: Any, cfg: GenerateConfig, engines: int | None, todo: int) -> int:
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if _uses_gpus(cfg):
        if gpus == 0:
            raise ConfigError(
                f"engine {cfg.engine!r} on {cfg.device or 'GPUs'} needs GPUs; the Ray cluster has none"
            )
        if engines is not None and engines > gpus:
            raise ConfigError(f"--engines {engines}: the Ray cluster has {gpus} GPU(s), one engine per GPU")
        engines = engines or gpus
    return max(1, min(engines or 1, todo))


def generate_file_ray(cfg: GenerateConfig) -> StageResult:
    """Complete each row of ``cfg.input`` into ``cfg.out`` on the Ray cluster at ``cfg.address`` with
    ``cfg.engines`` engines, skipping ids already there."""
    from codetune.collect.executor import connect_ray

    if cfg.input is None or cfg.out is None:
        raise ConfigError("generate needs an input file and an output file")
    params = sampling_params(cfg)
    rows = read_rows(Path(cfg.input), cfg)
    out = Path(cfg.out)
    finished = resumed_ids(out, rows, cfg)
    todo = [row for key, row in rows if key not in finished]
    start = time.monotonic()
    tokens = 0
    if todo:
        ray = connect_ray(cfg.address)
        count = _engine_count(ray, cfg, cfg.engines, len(todo))
        shards = [{"rows": json.dumps(todo[k::count], ensure_ascii=False)} for k in range(count)]
        results = ray.data.from_items(shards, override_num_blocks=count).map_batches(
            _generate_shard,
            fn_args=(cfg, params),
            batch_size=1,
            concurrency=count,
            num_cpus=1,
            num_gpus=1 if _uses_gpus(cfg) else 0,
        )
        appender = Appender(out)
        try:
            with progress(len(todo)) as advance:
                for row in results.iter_rows():
                    appender.write(json.loads(row["line"]))
                    tokens += int(row["tokens"])
                    advance(int(row["tokens"]))
        finally:
            appender.close()
    return generate_result(out, len(rows), len(todo), len(finished), tokens, time.monotonic() - start)
