"""One model under evaluation: what every task generates with.

A task's prompts are built and post-processed exactly as the server does for an editor (the same
``Generator`` rules): prompts over the room are trimmed like an editor's (prefix from the left,
suffix from the right), FIM items get the server's post-processing, so eval scores what the editor
receives. A timed task sends its requests one at a time, as an editor does, and gets the seconds of
each.
"""

from __future__ import annotations

import time
from typing import Any

from codetune.evaluate.config import EvalConfig
from codetune.generation.engines import engine_for
from codetune.generation.generator import Generator
from codetune.generation.params import SamplingParams, params_from
from codetune.generation.request import GenerationRequest, Request
from codetune.progress import StepProgress


class ModelRun:
    """A loaded model and tokenizer, its generator, the eval settings and the language scored in."""

    def __init__(self, name: str, model: Any, tokenizer: Any, cfg: EvalConfig, language: str | None) -> None:
        self.name, self.model, self.tokenizer, self.cfg, self.language = name, model, tokenizer, cfg, language
        engine = engine_for(model, tokenizer, max_batch_size=cfg.batch_size)
        self.generator = Generator(
            engine, context=engine.context_length, max_prompt_tokens=cfg.max_prompt_tokens
        )

    def params(
        self, n: int, stop: list[str], temperature: float | None = None, top_p: float | None = None
    ) -> SamplingParams:
        """The eval settings for a task's ``n`` and stops (the sweep's temperature and top_p when given)."""
        overrides: dict[str, Any] = {"n": n, "stop": list(stop)}
        if temperature is not None:
            overrides["temperature"] = temperature
        if top_p is not None:
            overrides["top_p"] = top_p
        return params_from(self.cfg, "eval", **overrides)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prepare(self, task: Any, item: Any, params: SamplingParams) -> Request:
        """One item's request, with the task's repository context for it."""
        context = task.context(item, self.count_tokens) if task.context is not None else None
        ask = GenerationRequest(
            item.prompt, item.suffix, params=params, language=self.language, repo_context=context
        )
        return self.generator.prepare(ask)

    def complete(
        self, task: Any, params: SamplingParams
    ) -> tuple[list[list[str]], list[Request], list[float]]:
        """Every item's ``n`` completion texts, the prepared requests, and (timed tasks) the seconds of each
        request, its building (context retrieval, trimming) included, as a server spends them."""
        texts: list[list[str]] = [[] for _ in task.items]
        latencies: list[float] = []
        if task.timed:
            prepared = []
            with StepProgress(f"eval {task.name}", len(task.items), unit="request") as progress:
                for index, item in enumerate(task.items):
                    start = time.perf_counter()
                    prepared.append(self.prepare(task, item, params))
                    [(_, completions)] = list(self.generator.run(prepared[-1:]))
                    latencies.append(time.perf_counter() - start)
                    texts[index] = [c.text for c in completions]
                    progress.update(index + 1)
            return texts, prepared, latencies
        prepared = [self.prepare(task, item, params) for item in task.items]
        generated = 0
        with StepProgress(f"eval {task.name}", len(prepared), unit="prompt") as progress:
            for done, (index, completions) in enumerate(self.generator.run(prepared), 1):
                texts[index] = [c.text for c in completions]
                generated += sum(len(c.token_ids) for c in completions)
                progress.update(done, tokens=generated)
        return texts, prepared, latencies
