"""The Python API: ``CodeModel``, ``pipeline`` and the ``generate`` helpers over raw prompts.

Each runs through a :class:`~codetune.generation.generator.Generator` over the same engine the
server runs (continuous batching for causal models), so a greedy request gives the same text on
every path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from codetune.errors import ConfigError
from codetune.generation.engines import engine_for
from codetune.generation.generator import Generator
from codetune.generation.params import SamplingParams, sampling_params
from codetune.generation.request import GenerationRequest
from codetune.generation.sequence import Completion, Cutter


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: list[str | list[int]],
    params: SamplingParams | list[SamplingParams] | None = None,
    *,
    batch_size: int = 32,
    token_budget: int | None = None,
    cutters: list[Cutter | None] | None = None,
    finishers: list[Callable[[str], str] | None] | None = None,
) -> Iterator[tuple[int, list[Completion]]]:
    """Yield ``(prompt index, its n completions)`` for raw prompts (text or ids), as they finish."""
    if params is None or isinstance(params, SamplingParams):
        params = [params or SamplingParams()] * len(prompts)
    for p in {id(p): p for p in params}.values():
        p.check()
    options: dict[str, Any] = {"max_batch_size": batch_size}
    if token_budget:
        options.update(kv_token_budget=token_budget, token_budget=token_budget)
    generator = Generator(engine_for(model, tokenizer, **options))  # raw prompts: no trimming
    requests = [generator.prepare(GenerationRequest(prompt, params=p)) for prompt, p in zip(prompts, params)]
    for i, request in enumerate(requests):
        request.cutter = cutters[i] if cutters else None
        request.finisher = finishers[i] if finishers else None
    yield from generator.run(requests)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    params: SamplingParams | None = None,
    *,
    batch_size: int = 8,
    token_budget: int | None = None,
) -> list[str]:
    """Complete each prompt; returns the first completion's new text only, in the prompts' order."""
    outputs: list[str] = [""] * len(prompts)
    for i, completions in generate_completions(
        model, tokenizer, list(prompts), params, batch_size=batch_size, token_budget=token_budget
    ):
        outputs[i] = completions[0].text
    return outputs


class CodeModel:
    """A code model (hub id, path, preset or run folder, plus an optional adapter kept unmerged)."""

    def __init__(
        self,
        path_or_id: str | Path,
        adapter: str | Path | None = None,
        *,
        device: str | None = None,
        postprocess: bool = True,
        engine: str = "continuous",
    ) -> None:
        from codetune.modeling.loading import default_device, load_model, load_tokenizer, resolve_model

        ref = resolve_model(path_or_id, adapter)
        self.name = str(path_or_id)
        self.tokenizer = load_tokenizer(ref)
        self.model = load_model(ref, device=device or default_device())
        self.postprocess = postprocess
        self.engine_name = engine
        self.last_warnings: list[str] = []

    def complete(self, prefix: str, suffix: str | None = None, **params: Any) -> str:
        """Complete ``prefix`` (filling the middle before ``suffix`` when given); the first completion."""
        return self.complete_all(prefix, suffix, **params)[0]

    def complete_all(self, prefix: str, suffix: str | None = None, **params: Any) -> list[str]:
        """All ``n`` completions of one prompt."""
        return self.generate([prefix], [suffix], **params)[0]

    def generate(
        self,
        prefixes: list[str],
        suffixes: list[str | None] | None = None,
        *,
        batch_size: int = 32,
        language: str | None = None,
        **params: Any,
    ) -> list[list[str]]:
        """Complete many prompts (continuous batching); one list of ``n`` texts per prompt."""
        from codetune.errors import InputError
        from codetune.generation.request import RequestError

        postprocess = params.pop("postprocess", self.postprocess)
        strict_fim = params.pop("strict_fim", False)
        settings = sampling_params(**params)
        suffixes = suffixes or [None] * len(prefixes)
        engine = engine_for(self.model, self.tokenizer, self.engine_name, max_batch_size=batch_size)
        generator = Generator(engine, context=engine.context_length, strict_fim=strict_fim)
        try:
            requests = [
                generator.prepare(
                    GenerationRequest(
                        prefix, suffix, params=settings, postprocess=postprocess, language=language
                    )
                )
                for prefix, suffix in zip(prefixes, suffixes)
            ]
        except RequestError as error:
            raise InputError(str(error)) from None
        self.last_warnings = sorted({r.warning for r in requests if r.warning})
        out: list[list[str]] = [[] for _ in prefixes]
        for i, completions in generator.run(requests):
            failed = next((s.error for s in requests[i].sequences if s.error), None)
            if failed:
                raise InputError(f"generation failed: {failed}")
            out[i] = [c.text for c in completions]
        return out


class CodeGenerationPipeline:
    """Taskflow-like callable: ``pipe("def add(a, b):")`` -> str, ``pipe([...])`` -> list[str]."""

    def __init__(self, model: CodeModel, **defaults: Any) -> None:
        self.model, self.defaults = model, defaults

    def __call__(self, inputs: str | list[str], suffix: str | None = None, **params: Any) -> str | list[str]:
        merged = {**self.defaults, **params}
        if isinstance(inputs, str):
            return self.model.complete(inputs, suffix, **merged)
        return [texts[0] for texts in self.model.generate(list(inputs), None, **merged)]


TASKS = {"code-generation": CodeGenerationPipeline, "code_generation": CodeGenerationPipeline}


def pipeline(
    task: str = "code-generation", model: str | Path | CodeModel = "tiny-gpt-bigcode", **kwargs: Any
) -> CodeGenerationPipeline:
    """Build a pipeline for ``task``; ``adapter=`` and ``device=`` go to the model, the rest are defaults."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; known: {', '.join(sorted(TASKS))}")
    if not isinstance(model, CodeModel):
        model = CodeModel(model, kwargs.pop("adapter", None), device=kwargs.pop("device", None))
    return TASKS[task](model, **kwargs)
