"""The one list of stages: name, config class, run function, what each reads and what it writes.

The CLI, the runner (`codetune run`), the Recipe model and the generated recipe reference all read
this list; adding a stage is one entry here. Config classes and run functions are named as
``module:attribute`` and imported on first use, so `codetune --help` imports no stage.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from codetune.errors import ConfigError


@dataclass(frozen=True)
class Input:
    """A config field that names an earlier stage's output: the first artefact present wins."""

    field: str
    artefacts: tuple[str, ...]


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline."""

    name: str
    config_path: str
    run_path: str
    reads: tuple[Input, ...] = ()
    writes: str | None = None  # the artefact it produces (None: serve writes nothing)
    out_name: str | None = None  # default output under the recipe's workdir
    blocking: bool = False  # runs until stopped: `codetune run` starts it only when asked

    @property
    def config_class(self) -> type:
        """The stage's pydantic config class."""
        return _load(self.config_path)

    @property
    def run(self) -> Callable[[Any], Any]:
        """The function that runs the stage on its config."""
        return _load(self.run_path)


def _load(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


STAGES: tuple[Stage, ...] = (
    Stage(
        "collect",
        "codetune.collect.config:CollectConfig",
        "codetune.collect.pipeline:collect",
        writes="corpus",
        out_name="corpus",
    ),
    Stage(
        "build",
        "codetune.dataset.config:BuildConfig",
        "codetune.dataset.builder:build",
        reads=(Input("corpus", ("corpus",)),),
        writes="dataset",
        out_name="dataset",
    ),
    Stage(
        "train",
        "codetune.train.config:TrainConfig",
        "codetune.train.recipe:train",
        reads=(Input("dataset", ("dataset",)),),
        writes="run",
        out_name="run",
    ),
    Stage(
        "merge",
        "codetune.train.config:MergeConfig",
        "codetune.train.merge:merge",
        reads=(Input("run", ("run",)),),
        writes="merged",
        out_name="merged",
    ),
    Stage(
        "export",
        "codetune.export.config:ExportConfig",
        "codetune.export.runner:export",
        reads=(Input("model", ("merged", "run")),),
        writes="gguf",
        out_name="model.gguf",
    ),
    Stage(
        "eval",
        "codetune.evaluate.config:EvalConfig",
        "codetune.evaluate.runner:evaluate",
        reads=(Input("dataset", ("dataset",)),),
        writes="report",
        out_name="report",
    ),
    Stage(
        "generate",
        "codetune.generation.config:GenerateConfig",
        "codetune.generation.runners:generate",
        reads=(Input("model", ("merged", "run")),),
        writes="generations",
        out_name="generations.jsonl",
    ),
    Stage(
        "serve",
        "codetune.serve.config:ServeConfig",
        "codetune.serve.app:serve",
        reads=(Input("model", ("merged", "run")),),
        blocking=True,
    ),
)

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)


def get_stage(name: str) -> Stage:
    """The registered stage, or a one-line error listing the stages."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ConfigError(f"unknown stage {name!r}; stages are: {', '.join(stage.name for stage in STAGES)}")
