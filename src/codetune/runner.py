"""`codetune run RECIPE.yaml`: every stage in order, each reading the previous one's output by path.

A stage is skipped when its output exists and carries the same recipe fingerprint: a hash of the
stage's config and of the fingerprints of everything upstream (for local sources: file names,
sizes and modification times). Change one field and that stage and the ones after it rerun.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codetune.config import STAGES, load_recipe
from codetune.errors import ConfigError
from codetune.files import MANIFEST, fingerprint, read_json, write_json
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


def _manifest_path(out: Path) -> Path:
    return out / MANIFEST if out.suffix == "" or out.is_dir() else out.with_name(out.name + ".manifest.json")


def recorded_fingerprint(out: Path) -> str | None:
    manifest = _manifest_path(out)
    if not out.exists() or not manifest.is_file():
        return None
    try:
        return read_json(manifest).get(RECIPE_KEY)
    except (OSError, ValueError, AttributeError):
        return None


def record_fingerprint(out: Path, value: str) -> None:
    manifest = _manifest_path(out)
    data = read_json(manifest) if manifest.is_file() else {}
    data[RECIPE_KEY] = value
    write_json(manifest, data)


def _wire(recipe: Any) -> dict[str, Any]:
    """Fill each stage's unset input/output paths from the stage before it and the workdir."""
    work = Path(recipe.workdir)
    wired: dict[str, Any] = {}
    if recipe.collect is not None:
        wired["collect"] = recipe.collect.model_copy(update={"out": recipe.collect.out or work / "corpus"})
    corpus = wired["collect"].out if "collect" in wired else None
    if recipe.build is not None:
        build = recipe.build
        wired["build"] = build.model_copy(
            update={"corpus": build.corpus or corpus, "out": build.out or work / "dataset"}
        )
    dataset = wired["build"].out if "build" in wired else None
    if recipe.train is not None:
        train = recipe.train
        wired["train"] = train.model_copy(
            update={"dataset": train.dataset or dataset, "out": train.out or work / "run"}
        )
    run_dir = wired["train"].out if "train" in wired else None
    if recipe.merge is not None:
        merge = recipe.merge
        wired["merge"] = merge.model_copy(
            update={"run": merge.run or run_dir, "out": merge.out or work / "merged"}
        )
    if recipe.eval is not None:
        ev = recipe.eval
        models = list(ev.models)
        if not models and "train" in wired:
            models = [f"base={wired['train'].model}", f"tuned={run_dir}"]
        wired["eval"] = ev.model_copy(
            update={"models": models, "dataset": ev.dataset or dataset, "out": ev.out or work / "report"}
        )
    tuned = wired["merge"].out if "merge" in wired else run_dir
    if recipe.generate is not None:
        gen = recipe.generate
        update: dict[str, Any] = {"out": gen.out or work / "generations.jsonl"}
        if "model" not in gen.model_fields_set and tuned is not None:
            update["model"] = str(tuned)
        wired["generate"] = gen.model_copy(update=update)
    if recipe.serve is not None:
        serve = recipe.serve
        update = {}
        if "model" not in serve.model_fields_set and tuned is not None:
            update["model"] = str(tuned)
        wired["serve"] = serve.model_copy(update=update)
    for name, cfg in wired.items():
        for field in ("corpus", "dataset", "run"):
            if field in type(cfg).model_fields and getattr(cfg, field) is None:
                raise ConfigError(f"{name}.{field} is not set and no earlier stage in the recipe produces it")
        if name == "generate" and cfg.input is None:
            raise ConfigError("generate.input is not set: give a JSONL file of prompts")
    return wired


def _stage_function(name: str) -> Callable[[Any], StageResult]:
    if name == "collect":
        from codetune.collect.pipeline import collect

        return collect
    if name == "build":
        from codetune.dataset.builder import build

        return build
    if name == "train":
        from codetune.train.recipe import train

        return train
    if name == "merge":
        from codetune.train.merge import merge

        return merge
    if name == "eval":
        from codetune.evaluate.runner import evaluate

        return evaluate
    if name == "generate":
        from codetune.inference.batch import generate_file

        return generate_file
    from codetune.serve.app import serve

    return serve


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
    return None if name == "serve" else Path(cfg.out)


def run_recipe(
    path: str | Path, overrides: list[str] | None = None, stages: list[str] | None = None, force: bool = False
) -> list[StageResult]:
    """Run the recipe's stages in order; returns one StageResult per stage (skipped ones marked)."""
    recipe = load_recipe(path, overrides)
    for name in stages or []:
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    from codetune.languages import register_spec

    for spec in recipe.languages:
        register_spec(spec)
    wired = _wire(recipe)
    if not wired:
        raise ConfigError(f"recipe {path} has no stage section ({', '.join(STAGES)})")
    upstream = fingerprint(recipe.name, [spec.model_dump(mode="json") for spec in recipe.languages])
    results: list[StageResult] = []
    for name in STAGES:
        if name not in wired or (stages and name not in stages):
            continue
        if name == "serve" and not stages:
            continue  # serving blocks; `codetune run R --stages serve` starts it
        cfg = wired[name]
        extra = source_signature(cfg.sources) if name == "collect" else None
        upstream = fingerprint(upstream, name, cfg.model_dump(mode="json"), extra)
        out = _stage_out(name, cfg)
        if out is not None and not force and recorded_fingerprint(out) == upstream:
            logger.info("%s: unchanged, skipping", name)
            results.append(StageResult(name, out, {"fingerprint": upstream}, skipped=True))
            continue
        result = _replacing(out, lambda cfg=cfg, name=name: _stage_function(name)(cfg))
        if out is not None:
            record_fingerprint(out, upstream)
        if isinstance(result, StageResult):
            results.append(result)
    return results
