"""`codetune quickstart`: the whole path on any machine, offline and on CPU, in a few minutes.

A randomly initialised model knows nothing, so comparing it with a tuned copy would prove nothing.
The quickstart first gives a tiny model general Python knowledge by a short pretraining on most of
the standard library (cached, so later runs reuse it), then adapts it with LoRA to one package it
never saw ("project adaptation") and evaluates base and tuned side by side on that package's
held-out files.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from codetune.artifacts.paths import REPORT_MD
from codetune.files import fingerprint
from codetune.modeling.presets import cache_dir, stdlib_dir
from codetune.stage import StageResult

logger = logging.getLogger(__name__)
console = Console(stderr=True)

PRESET = "tiny-gpt-bigcode"
HELD_OUT_PACKAGE = "email"
STDLIB_SKIP = [
    "test/**",
    "idlelib/**",
    "lib2to3/**",
    "site-packages/**",
    "**/tests/**",
    "tkinter/**",
    "turtledemo/**",
    "ensurepip/**",
    "pydoc_data/**",
]


@dataclass(frozen=True)
class QuickstartSettings:
    """How much work each step does; the defaults fit in under 10 minutes on 2 CPU cores."""

    pretrain_steps: int = 500
    adapt_steps: int = 160
    samples: int = 150
    max_length: int = 256
    pretrain_source: Path | None = None  # default: the standard library minus the held-out package
    # Adapt on examples that carry context from the project's other train files (build repo_context),
    # laid out as `codetune serve` lays out the context it retrieves.
    repo_context: bool = False
    repo_context_budget: int = 128


def _step(message: str) -> None:
    console.print(f"[bold cyan]quickstart[/] {message}")


def pretrained_base(settings: QuickstartSettings) -> tuple[Path, list[StageResult]]:
    """A tiny base pretrained on the standard library minus the held-out package; cached."""
    from codetune.artifacts.run import weights_folder
    from codetune.collect.config import CollectConfig
    from codetune.collect.pipeline import collect
    from codetune.dataset.builder import build
    from codetune.dataset.config import BuildConfig
    from codetune.train.config import TrainConfig
    from codetune.train.recipe import train

    source = settings.pretrain_source or stdlib_dir()
    pretrain_steps, max_length = settings.pretrain_steps, settings.max_length
    key = fingerprint(
        PRESET, str(source), sys.version_info[:2], pretrain_steps, max_length, HELD_OUT_PACKAGE, "v1"
    )
    root = cache_dir() / "quickstart" / f"base-{key}"
    run = root / "run"
    model = weights_folder(run, peft=False)
    if (model / "config.json").is_file():
        _step(f"reusing the pretrained base in {run}")
        return model, []
    _step(f"pretraining a tiny base on the standard library ({pretrain_steps} steps; cached for next time)")
    results = [
        collect(
            CollectConfig(
                sources=[str(source)],
                language="python",
                out=root / "corpus",
                exclude=[*STDLIB_SKIP, f"{HELD_OUT_PACKAGE}/**"],
            )
        ),
    ]
    results.append(
        build(
            BuildConfig(
                corpus=root / "corpus",
                format="files",
                model=PRESET,
                out=root / "dataset",
                max_length=max_length,
                valid_fraction=0.01,
                test_fraction=0.01,
                fim_rate=0.0,
            )
        )
    )
    results.append(
        train(
            TrainConfig(
                model=PRESET,
                dataset=root / "dataset",
                method="full",
                out=run,
                max_steps=pretrain_steps,
                lr=2e-3,
                warmup_ratio=0.05,
                batch_tokens=2048,
                pack_length=max_length,
                eval_max_batches=4,
                eval_every=max(pretrain_steps, 1),
                save_every=max(pretrain_steps // 2, 1),
                resume=run.exists(),
            )
        )
    )
    return model, results


def quickstart(
    source: Path | None = None, out: Path = Path("quickstart-out"), settings: QuickstartSettings | None = None
) -> list[StageResult]:
    """Pretrain (cached) -> collect the project -> build -> LoRA -> eval base vs tuned."""
    from codetune.collect.config import CollectConfig
    from codetune.collect.pipeline import collect
    from codetune.dataset.builder import build
    from codetune.dataset.config import BuildConfig
    from codetune.evaluate.config import EvalConfig
    from codetune.evaluate.runner import evaluate
    from codetune.train.config import TrainConfig
    from codetune.train.recipe import train

    started = time.monotonic()
    out = Path(out)
    settings = settings or QuickstartSettings()
    adapt_steps, samples, max_length = settings.adapt_steps, settings.samples, settings.max_length
    base, results = pretrained_base(settings)

    project = Path(source) if source is not None else stdlib_dir() / HELD_OUT_PACKAGE
    with_context = " on examples with repository context" if settings.repo_context else ""
    _step(f"adapting the base to {project} with LoRA ({adapt_steps} steps){with_context}")
    results.append(collect(CollectConfig(sources=[str(project)], language="python", out=out / "corpus")))
    results.append(
        build(
            BuildConfig(
                corpus=out / "corpus",
                format="files",
                model=str(base),
                out=out / "dataset",
                max_length=max_length,
                valid_fraction=0.1,
                test_fraction=0.2,
                seed=0,
                fim_rate=0.0,
                repo_context=settings.repo_context,
                repo_context_budget=settings.repo_context_budget,
            )
        )
    )
    results.append(
        train(
            TrainConfig(
                model=str(base),
                dataset=out / "dataset",
                method="lora",
                out=out / "run",
                max_steps=adapt_steps,
                lr=2e-3,
                lora_r=16,
                lora_alpha=32,
                batch_tokens=2048,
                pack_length=max_length,
                eval_max_batches=8,
                eval_every=max(adapt_steps // 4, 1),
                save_every=adapt_steps,
            )
        )
    )
    _step("evaluating base and tuned models on held-out files never trained on")
    report = evaluate(
        EvalConfig(
            models=[f"base={base}", f"tuned={out / 'run'}"],
            dataset=out / "dataset",
            out=out / "report",
            samples=samples,
            tasks=["completion", "editor", "loss"],
            line_cut="mid",
            max_new_tokens=24,
            seed=0,
        )
    )
    results.append(report)
    minutes = (time.monotonic() - started) / 60
    console.print(f"\nquickstart finished in {minutes:.1f} min. Report: {out / 'report' / REPORT_MD}")
    console.print(f"Try the tuned model:\n  codetune serve --model {out / 'run'}\n")
    return results
