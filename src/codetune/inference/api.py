"""The Python API: ``CodeModel(...).complete(prefix, suffix)`` and ``pipeline("code-generation", ...)``."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from codetune.errors import ConfigError
from codetune.inference.engine import SamplingParams, generate_completions

_PARAM_NAMES = {f.name for f in fields(SamplingParams)}
_ALIASES = {"max_tokens": "max_new_tokens", "max_length": "max_new_tokens", "min_length": "min_new_tokens"}


def sampling_params(**params: Any) -> SamplingParams:
    """SamplingParams from keyword arguments (OpenAI and CodeGen spellings accepted)."""
    decode_strategy = params.pop("decode_strategy", None)
    values = {_ALIASES.get(k, k): v for k, v in params.items()}
    unknown = sorted(set(values) - _PARAM_NAMES)
    if unknown:
        raise ConfigError(f"unknown generation parameter(s): {', '.join(unknown)}")
    if isinstance(values.get("stop"), str):
        values["stop"] = [values["stop"]]
    if decode_strategy == "greedy_search":
        values["temperature"] = 0.0
    elif decode_strategy == "beam_search":
        values.setdefault("num_beams", 4)
    result = SamplingParams(**values)
    try:
        result.check()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return result


class CodeModel:
    """A code model (hub id, path, preset or run folder, plus an optional adapter kept unmerged)."""

    def __init__(
        self,
        path_or_id: str | Path,
        adapter: str | Path | None = None,
        *,
        device: str | None = None,
        postprocess: bool = True,
    ) -> None:
        from codetune.modeling.loading import default_device, load_model, load_tokenizer, resolve_model

        ref = resolve_model(path_or_id, adapter)
        self.name = str(path_or_id)
        self.tokenizer = load_tokenizer(ref)
        self.model = load_model(ref, device=device or default_device())
        self.postprocess = postprocess

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
        **params: Any,
    ) -> list[list[str]]:
        """Complete many prompts in length-sorted batches; one list of ``n`` texts per prompt."""
        from codetune.errors import InputError
        from codetune.inference.postprocess import fim_postprocessor
        from codetune.inference.prompts import build_prompt

        postprocess = params.pop("postprocess", self.postprocess)
        settings = sampling_params(**params)
        suffixes = suffixes or [None] * len(prefixes)
        prompts, cutters, finishers = [], [], []
        for prefix, suffix in zip(prefixes, suffixes):
            try:
                prompts.append(build_prompt(self.tokenizer, prefix, suffix))
            except Exception as error:
                raise InputError(str(error)) from None
            post = fim_postprocessor(prefix, suffix) if suffix is not None and postprocess else None
            cutters.append(post.cut if post else None)
            finishers.append(post.finish if post else None)
        out: list[list[str]] = [[] for _ in prefixes]
        for i, completions in generate_completions(
            self.model,
            self.tokenizer,
            prompts,
            settings,
            batch_size=batch_size,
            cutters=cutters,
            finishers=finishers,
        ):
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
