"""What every eval task is: prompts, how to generate for them, and how to score what came back.

A :class:`Task` is built by its module's ``build(cfg, test_rows, stats)`` (the registry,
``codetune.evaluate.tasks``, names the modules; ``codetune.evaluate.tasks.build`` loads them) and run on each model by :meth:`Task.evaluate`: the
runner hands it the model under evaluation (``codetune.evaluate.session.ModelRun``), the task asks for
its completions and scores them with its own :meth:`Task.score`. The runner never asks what kind of
task it runs. :class:`ReferenceTask` is the common scorer: reference metrics, or a CodeXGLUE style.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codetune.evaluate.config import EvalConfig


@dataclass
class Item:
    """One prompt: its text (or FIM prefix/suffix), the reference when there is one, and where it came from."""

    prompt: str
    reference: str | None = None
    suffix: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Context snippets the benchmark brings (CrossCodeEval's retrieved chunks), for the context run.
    snippets: tuple[Any, ...] = ()


@dataclass
class TaskResult:
    """One model's run of one task: its scores, per-prompt rows and predictions."""

    scores: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    generations: list[list[str]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


@dataclass
class Task:
    """A set of prompts with how to generate for them; subclasses score (:meth:`score`)."""

    name: str
    items: list[Item]
    description: str
    stop: list[str] = field(default_factory=list)
    single_line: bool = False  # the editor keeps the first line of each completion
    n: int = 1
    timed: bool = False  # one request at a time, as an editor sends them, with latency per request
    fim_optional: bool = False  # models without FIM tokens get the prefix alone, as serve answers them
    # Repository context per item, given the model's token counter: a RepoContext or None.
    context: Callable[[Item, Callable[[str], int]], Any] | None = None
    baseline: str | None = None  # the task this one repeats with context (the report gives the delta)
    # The sampling sweep runs on the task of lowest rank (None: never this one).
    sweep_rank: int | None = None
    # Why this task needs a language for scoring (None: it does not).
    needs_language: str | None = None

    @property
    def prefix(self) -> str:
        """What this task's score names start with in a model's scores."""
        return f"{self.name}_"

    @property
    def size(self) -> int:
        """How many prompts (or examples) the task has."""
        return len(self.items)

    def for_tokenizer(self, tokenizer: Any, model: str, prefix_alone: bool = False) -> Task | None:
        """The task as a model with this tokenizer can run it: FIM items without FIM tokens are skipped
        (or, where the task allows it or ``prefix_alone`` asks for it, sent as the prefix alone, as serve
        answers them)."""
        from dataclasses import replace

        from codetune.fim import FimFormat

        if (
            not any(i.suffix is not None for i in self.items)
            or FimFormat.from_tokenizer(tokenizer) is not None
        ):
            return self
        import logging

        if not self.fim_optional and not prefix_alone:
            logging.getLogger(__name__).warning(
                "%s: no fill-in-the-middle tokens, task %s skipped", model, self.name
            )
            return None
        if not self.fim_optional:
            logging.getLogger(__name__).warning(
                "%s: no fill-in-the-middle tokens, task %s gets the prefix alone", model, self.name
            )
        return replace(self, items=[replace(i, suffix=None) for i in self.items])

    def evaluate(self, run: Any, **sampling: Any) -> TaskResult:
        """Generate for every item on the model ``run`` holds and score it (``sampling``: the sweep's
        temperature and top_p)."""
        texts, prepared, latencies = run.complete(self, run.params(self.n, self.stop, **sampling))
        generations = [[t.split("\n", 1)[0] for t in ts] if self.single_line else ts for ts in texts]
        scores, rows = self.score(generations, run.cfg, run.language)
        predictions = []
        for index, (item, built) in enumerate(zip(self.items, prepared)):
            prediction = {
                "id": item.meta.get("id", index),
                "task": self.name,
                "prefix": item.prompt,
                "suffix": item.suffix,
                "prediction": generations[index][0] if generations[index] else "",
                "reference": item.reference,
            }
            if self.context is not None:
                prediction["context"] = [s.path for s in built.context_snippets]
            predictions.append(prediction)
        return TaskResult(scores, rows, predictions, generations, latencies)

    def score(
        self, generations: list[list[str]], cfg: EvalConfig, language: str | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Scores of one model's ``generations`` (n per item), and its per-prompt rows."""
        raise NotImplementedError


@dataclass
class ReferenceTask(Task):
    """Compared with a reference per item: the reference ``metrics``, or a CodeXGLUE ``style``."""

    metrics: list[str] = field(default_factory=list)
    style: str | None = None  # a CodeXGLUE scorer for benchmark files

    def score(
        self, generations: list[list[str]], cfg: EvalConfig, language: str | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from codetune.evaluate.codexglue import STYLES, fuzz_ratio, post_process_method, tokenize_line
        from codetune.evaluate.metrics import compute

        firsts = [g[0] if g else "" for g in generations]
        references = [i.reference or "" for i in self.items]
        prompts = [i.prompt for i in self.items]
        if self.style is not None:
            if self.style == "codexglue-line":  # gt is CodeXGLUE-tokenised: so are the predictions
                preds = [tokenize_line(p, r, language) for p, r in zip(firsts, references, strict=True)]
            else:
                preds = [" ".join(p.split()) for p in firsts]
            scores = dict(STYLES[self.style](references, preds))
            scores.pop("n", None)
        else:
            scores = compute(self.metrics, firsts, references, prompts=prompts, language=language)
        if language is not None and not self.single_line and self.style is None:
            scores |= compute(
                ["syntax_valid_truncated"], firsts, references, prompts=prompts, language=language
            )
        rows = [
            {
                "index": index,
                **item.meta,
                "prompt_tail": item.prompt[-300:],
                "reference": item.reference,
                "prediction": pred,
                "edit_sim": fuzz_ratio(
                    post_process_method(pred.strip()), post_process_method((item.reference or "").strip())
                ),
            }
            for index, (item, pred) in enumerate(zip(self.items, firsts))
        ]
        return scores, rows


@dataclass(frozen=True)
class ScoreFiles:
    """What ``codetune score`` gives a task to score: predictions, and references or problems."""

    predictions: Path
    references: Path | None = None
    problems: Path | None = None
    allow_execution: bool = False
    unsafe_network: bool = False
