"""`codetune run RECIPE.yaml`: every stage in order, each reading the previous one's output by path.

A stage is skipped when its output exists and carries the same recipe fingerprint: a hash of the
stage's config and of the fingerprints of everything upstream (for local sources: file names,
sizes and modification times). Change one field and that stage and the ones after it rerun. A stage
left out by ``--stages`` passes on the fingerprint its output records (or that it has none), so
the stages after it rerun when that output was remade with other settings, or removed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codetune import stages as registry
from codetune.artifacts.manifest import manifest_value, update_manifest
from codetune.config import load_recipe
from codetune.errors import ConfigError
from codetune.files import fingerprint
from codetune.stage import StageResult

logger = logging.getLogger(__name__)
RECIPE_KEY = "recipe_fingerprint"


def source_signature(sources: list[str]) -> str:
    """A cheap hash of local sources' file list, sizes and times; remote sources hash by name."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.encode())
        path = Path(source).expanduser()
        if path.is_file():
            stat = path.stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        elif path.is_dir():
            for file in sorted(path.rglob("*")):
                try:
                    stat = file.stat()
                except OSError:
                    continue
                digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def recorded_fingerprint(out: Path) -> str | None:
    return manifest_value(out, RECIPE_KEY) if out.exists() else None


def record_fingerprint(out: Path, value: str) -> None:
    update_manifest(out, **{RECIPE_KEY: value})


def _wire(recipe: Any) -> dict[str, Any]:
    """Fill each stage's unset inputs from the outputs of the stages before it, and its output from the workdir.

    What a stage reads and writes comes from the stage registry: an input field takes the first
    artefact of its list that an earlier stage of the recipe produces.
    """
    work = Path(recipe.workdir)
    produced: dict[str, Path] = {}
    wired: dict[str, Any] = {}
    for stage in registry.STAGES:
        cfg = getattr(recipe, stage.name)
        if cfg is None:
            continue
        update: dict[str, Any] = {}
        for read in stage.reads:
            if read.field in cfg.model_fields_set and getattr(cfg, read.field) is not None:
                continue
            source = next((produced[kind] for kind in read.artefacts if kind in produced), None)
            if source is not None:
                update[read.field] = str(source) if read.field == "model" else source
            elif getattr(cfg, read.field) is None:
                raise ConfigError(
                    f"{stage.name}.{read.field} is not set and no earlier stage in the recipe produces it"
                )
        if stage.name == "eval" and not cfg.models and "train" in wired:
            # base vs tuned: the model the run started from, and the run itself
            update["models"] = [f"base={wired['train'].model}", f"tuned={produced['run']}"]
        if stage.out_name is not None:
            update["out"] = cfg.out or work / stage.out_name
        cfg = cfg.model_copy(update=update)
        if stage.name == "generate" and cfg.input is None:
            raise ConfigError("generate.input is not set: give a JSONL file of prompts")
        wired[stage.name] = cfg
        if stage.writes is not None:
            produced[stage.writes] = Path(cfg.out)
    return wired


def _replacing(out: Path | None, work: Callable[[], Any]) -> Any:
    """Run a stage whose earlier output (made by a recipe, with other settings) it replaces.

    The old output is set aside, not deleted, until the new one is complete: a failed rerun puts it back.
    """
    if out is None or recorded_fingerprint(out) is None:
        return work()
    aside = out.with_name(f".{out.name}.previous")
    if aside.exists():
        shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
    os.replace(out, aside)
    try:
        result = work()
    except BaseException:
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(aside, out)
        raise
    shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
    return result


def _stage_out(name: str, cfg: Any) -> Path | None:
    return Path(cfg.out) if registry.get_stage(name).writes is not None else None


def run_recipe(
    path: str | Path, overrides: list[str] | None = None, stages: list[str] | None = None, force: bool = False
) -> list[StageResult]:
    """Run the recipe's stages in order; returns one StageResult per stage (skipped ones marked)."""
    recipe = load_recipe(path, overrides)
    for name in stages or []:
        registry.get_stage(name)
    from codetune.languages import register_spec

    for spec in recipe.languages:
        register_spec(spec)
    wired = _wire(recipe)
    if not wired:
        raise ConfigError(
            f"recipe {path} has no stage section ({', '.join(stage.name for stage in registry.STAGES)})"
        )
    upstream = fingerprint(recipe.name, [spec.model_dump(mode="json") for spec in recipe.languages])
    results: list[StageResult] = []
    for stage in registry.STAGES:
        name = stage.name
        if name not in wired:
            continue
        cfg = wired[name]
        if (stages and name not in stages) or (stage.blocking and not stages):
            # Not run now (serving blocks; `codetune run R --stages serve` starts it): the stages
            # after it chain on what its output really holds, so a rebuilt, edited or deleted
            # input makes them rerun instead of being skipped as unchanged.
            out = _stage_out(name, cfg)
            if out is not None:
                upstream = recorded_fingerprint(out) or fingerprint(upstream, name, "absent")
            continue
        extra = source_signature(cfg.sources) if name == "collect" else None
        upstream = fingerprint(upstream, name, cfg.model_dump(mode="json"), extra)
        out = _stage_out(name, cfg)
        if out is not None and not force and recorded_fingerprint(out) == upstream:
            logger.info("%s: unchanged, skipping", name)
            results.append(StageResult(name, out, {"fingerprint": upstream}, skipped=True))
            continue
        result = _replacing(out, lambda cfg=cfg, stage=stage: stage.run(cfg))
        if out is not None:
            record_fingerprint(out, upstream)
        if isinstance(result, StageResult):
            results.append(result)
    return results


def plan_recipe(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """`codetune run RECIPE --dry-run`: the train stage's plan (no weights, no network, nothing written)."""
    from codetune.train.dryrun import plan

    recipe = load_recipe(path, overrides)
    if recipe.train is None:
        raise ConfigError(f"recipe {path} has no train stage to plan")
    wired = _wire(recipe)
    max_length = recipe.build.max_length if recipe.build is not None else None
    return {"train": plan(wired["train"], max_length=max_length)}
