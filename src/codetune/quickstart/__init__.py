"""`codetune quickstart`: the whole path on any machine, offline and on CPU, in a few minutes.

It starts from a tiny model that already knows some Python (pretrained on most of the standard
library, once, by codetune itself, and shipped: ``codetune.quickstart.base``), adapts it with LoRA
to one package it never saw ("project adaptation") and evaluates base and tuned side by side on
that package's held-out files.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from codetune.artifacts.paths import REPORT_MD
from codetune.progress import duration
from codetune.quickstart.base import (
    HELD_OUT_PACKAGE,
    BaseRecipe,
    base_recipe,
    files_dataset,
    pretrain,
    shipped_base,
)
from codetune.stage import StageResult

logger = logging.getLogger(__name__)
console = Console(stderr=True, highlight=False, soft_wrap=True)

__all__ = ["HELD_OUT_PACKAGE", "BaseRecipe", "QuickstartSettings", "pretrained_base", "quickstart"]


@dataclass(frozen=True)
class QuickstartSettings:
    """How much work each step does; the defaults take about 2 minutes on 2 CPU cores."""

    pretrain_steps: int | None = None  # None: the shipped base; a number pretrains here (cached)
    adapt_steps: int = 160
    # At 2e-3 the adapted model began more answers with a new line at editor cursors (empty suggestions
    # 34% -> 58%, editor replay -0.67 on Debian's Python); at 1e-3, 15% and +9.96.
    adapt_lr: float = 1e-3
    # Per task (line completion, editor replay). 150 left the line-completion gain of one run inside
    # its noise (+0.66, interval -1.27 to +2.59) and moving from run to run; 400 cost about 30 s more.
    samples: int = 400
    max_length: int = 256
    pretrain_source: Path | None = None  # default: the standard library minus the held-out package
    # Adapt on examples that carry context from the project's other train files (build repo_context),
    # laid out as `codetune serve` lays out the context it retrieves.
    repo_context: bool = False
    repo_context_budget: int = 128
    base: Path | None = None  # a model folder to adapt instead (no pretraining, nothing shipped)
    fim_rate: float = 0.5  # as the base was pretrained: the editor replay sends FIM requests
    # The LoRA run's seed (initial adapter, order of the examples) and the eval's (which cut points and
    # cursors are drawn); the held-out files stay the same whatever it is.
    seed: int = 0


def _step(number: int, message: str) -> None:
    console.print(f"[bold cyan]quickstart[/] [{number}/3] {message}")


def pretrained_base(settings: QuickstartSettings) -> tuple[Path, list[StageResult]]:
    """The base to adapt: the shipped one, or one pretrained here when the settings ask for another."""
    if settings.base is not None:
        _step(1, f"starting from {settings.base}")
        return Path(settings.base), []
    if settings.pretrain_steps is None and settings.pretrain_source is None:
        base = shipped_base()
        _step(1, f"starting from the shipped base pretrained on the standard library ({base})")
        return base, []
    recipe = base_recipe(settings.pretrain_steps)
    return pretrain(recipe, settings.pretrain_source, say=lambda text: _step(1, text))


def serve_command(run: Path) -> str:
    """The `codetune serve` line that works from here: the entry point of this interpreter when it is
    not on PATH (make installed into .venv), else plain ``codetune``."""
    import shutil

    script = Path(sys.executable).parent / "codetune"
    if not script.is_file():
        return f"{_relative(Path(sys.executable))} -m codetune serve --model {run}"
    on_path = shutil.which("codetune")
    if on_path is None or Path(on_path).resolve() != script.resolve():
        return f"{_relative(script)} serve --model {run}"
    return f"codetune serve --model {run}"


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    seconds[stage] = time.monotonic() - started


def quickstart(
    source: Path | None = None, out: Path = Path("quickstart-out"), settings: QuickstartSettings | None = None
) -> list[StageResult]:
    """Base (shipped or pretrained, cached) -> collect the project -> build -> LoRA -> eval base vs tuned."""
    from codetune.collect.config import CollectConfig
    from codetune.collect.pipeline import collect
    from codetune.dataset.builder import build
    from codetune.evaluate.config import EvalConfig
    from codetune.evaluate.runner import evaluate
    from codetune.modeling.presets import stdlib_dir
    from codetune.train.config import TrainConfig
    from codetune.train.recipe import train

    started = time.monotonic()
    out = Path(out)
    settings = settings or QuickstartSettings()
    seconds: dict[str, float] = {}
    with _timed(seconds, "base"):
        base, results = pretrained_base(settings)
    project = Path(source) if source is not None else stdlib_dir() / HELD_OUT_PACKAGE
    with_context = " on examples with repository context" if settings.repo_context else ""
    _step(2, f"adapting the base to {project} with LoRA ({settings.adapt_steps} steps){with_context}")
    with _timed(seconds, "collect"):
        results.append(collect(CollectConfig(sources=[str(project)], language="python", out=out / "corpus")))
    build_cfg = files_dataset(
        out,
        base,
        settings.max_length,
        (0.1, 0.2),
        seed=0,
        fim_rate=settings.fim_rate,
        repo_context=settings.repo_context,
        repo_context_budget=settings.repo_context_budget,
    )
    with _timed(seconds, "build"):
        results.append(build(build_cfg))
    train_cfg = TrainConfig(
        model=str(base),
        dataset=out / "dataset",
        method="lora",
        out=out / "run",
        max_steps=settings.adapt_steps,
        lr=settings.adapt_lr,
        lora_r=16,
        lora_alpha=32,
        batch_tokens=2048,
        pack_length=settings.max_length,
        eval_max_batches=8,
        eval_every=max(settings.adapt_steps // 4, 1),
        save_every=settings.adapt_steps,
        seed=settings.seed,
    )
    with _timed(seconds, "adapt"):
        results.append(train(train_cfg))
    _step(3, "evaluating base and tuned models on held-out files never trained on")
    eval_cfg = EvalConfig(
        models=[f"base={base}", f"tuned={out / 'run'}"],
        dataset=out / "dataset",
        out=out / "report",
        samples=settings.samples,
        tasks=["completion", "editor", "loss"],
        line_cut="mid",
        max_new_tokens=24,
        seed=settings.seed,
        context="both" if settings.repo_context else "without",
    )
    with _timed(seconds, "eval"):
        results.append(evaluate(eval_cfg))
    stages = ", ".join(f"{stage} {duration(value)}" for stage, value in seconds.items())
    console.print(
        f"\nquickstart finished in {duration(time.monotonic() - started)} ({stages}). "
        f"Report: {out / 'report' / REPORT_MD}"
    )
    console.print(f"Try the tuned model:\n  {serve_command(out / 'run')}\n")
    return results
