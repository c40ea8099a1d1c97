"""Loading the registry's task modules: the tasks an eval asks for, and the scorer of a score style.

Modules are imported here, on first use, and never import this module back: a task depends on
``base`` and its config only.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from codetune.errors import ConfigError, InputError
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.tasks import STYLES, TASKS
from codetune.evaluate.tasks.base import ScoreFiles, Task


def score_files(style: str, files: ScoreFiles) -> dict[str, Any]:
    """``codetune score --style STYLE``: the task that has the style scores the files."""
    if style not in STYLES:
        raise InputError(f"unknown --style {style!r}; choose one of: {', '.join(STYLES)}")
    return task_module(STYLES[style]).score_style(style, files)


def task_module(name: str) -> ModuleType:
    """The module of the registered task ``name`` (imported now)."""
    return _module(TASKS[name].module)


def _module(module: str) -> ModuleType:
    return importlib.import_module(f"codetune.evaluate.tasks.{module}")


def build_tasks(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> list[Task]:
    """Every requested task that has inputs, each built once (so every model sees the same prompts)."""
    unknown = [t for t in cfg.tasks if t not in TASKS]
    if unknown:
        raise ConfigError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    wanted = list(cfg.tasks)
    extras = (
        ("prompts", cfg.prompts),
        ("benchmark", cfg.benchmark),
        ("execution", cfg.problems),
        ("safim", cfg.safim),
        ("crosscodeeval", cfg.crosscodeeval),
        ("acceptance", cfg.records),
    )
    for extra, given in extras:
        if extra == "execution" and "humaneval-infilling" in wanted:
            continue  # the problems file is the infilling task's
        if given is not None and extra not in wanted:
            wanted.append(extra)
    tasks: list[Task] = []
    for module in dict.fromkeys(TASKS[name].module for name in wanted):
        built = _module(module).build(cfg, rows, stats)
        tasks += built if isinstance(built, list) else [built] if built is not None else []
    return tasks
