"""The task registry: one row per eval task, naming the module that builds it and scores it.

Each module (``codetune.evaluate.tasks.<module>``) has ``build(cfg, test_rows, stats)``, returning its
:class:`~codetune.evaluate.tasks.base.Task` (or several, or None when it has no inputs); the task
generates through the runner and scores itself. A task that scores files too (``codetune score
--style``) names its styles here and has ``score_files(style, ...)``. Modules are imported on first
use, so `codetune --help` imports none. Adding a task: one module and one row below.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskRow:
    module: str  # codetune.evaluate.tasks.<module>
    styles: tuple[str, ...] = ()  # the `codetune score --style` names its score_files takes


# In the order `codetune eval --help` lists them.
TASKS: dict[str, TaskRow] = {
    "completion": TaskRow("completion"),
    "fim": TaskRow("fim"),
    "loss": TaskRow("loss"),
    "prompts": TaskRow("prompts"),
    "benchmark": TaskRow("benchmark", ("codexglue-method", "codexglue-line")),
    "execution": TaskRow("execution"),
    "humaneval-infilling": TaskRow("humaneval_infilling", ("humaneval-infilling",)),
    "editor": TaskRow("editor"),
    "safim": TaskRow("safim"),
    "crosscodeeval": TaskRow("crosscodeeval"),
    "crosscodeeval_context": TaskRow("crosscodeeval"),  # the same task: its context run is in it
    "acceptance": TaskRow("acceptance"),
}
STYLES: dict[str, str] = {style: name for name, row in TASKS.items() for style in row.styles}
