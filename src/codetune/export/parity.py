"""Does the exported GGUF behave like the model it came from? Greedy text on the same prompts, compared.

Both sides go through codetune's one request builder and engine (what ``codetune serve`` runs), each
with its own tokenizer: the GGUF's is the one transformers rebuilds from the file, so a tokenizer that
did not survive the export shows here too. Plain prompts and, when the model has FIM tokens, FIM ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from codetune.fim import FimFormat

# General code in a few languages: the check is about the export, not about any one language.
PLAIN_PROMPTS = (
    "def fibonacci(n):\n    ",
    "import os\n\n\ndef list_files(folder):\n    ",
    "class Stack:\n    def __init__(self):\n        ",
    "function sum(xs) {\n  ",
    "module Main exposing (main)\n\nimport Html exposing (text)\n\nmain =\n    ",
    "fun greet(name: String): String {\n    ",
    "for i in range(10):\n    ",
    "SELECT name, COUNT(*) FROM users ",
)
FIM_PROMPTS = (
    ("def area(width, height):\n    ", "\n    return result\n"),
    ("def is_even(n):\n    return ", "\n\n\nprint(is_even(4))\n"),
    ("total = 0\nfor x in values:\n    ", "\nprint(total)\n"),
    ("function double(x) {\n  return ", ";\n}\n"),
    ("add : Int -> Int -> Int\nadd a b =\n    ", "\n\n\nmain = text (String.fromInt (add 1 2))\n"),
    ("fun max(a: Int, b: Int): Int {\n    ", "\n}\n"),
    ("with open(path) as handle:\n    ", "\n    return lines\n"),
    ("x = [1, 2, 3]\ny = ", "\nprint(y)\n"),
)


@dataclass
class Parity:
    """How many prompts gave the same greedy text, and the ones that did not."""

    same: int
    total: int
    differing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.same / self.total if self.total else 1.0

    def line(self, label: str = "greedy agreement") -> str:
        return f"{label}: {self.same}/{self.total} prompts ({100 * self.rate:.0f}%)"


def check_prompts(tokenizer: Any, count: int) -> list[tuple[str, str | None]]:
    """``count`` prompts: half FIM (prefix, suffix) when the tokenizer has FIM tokens, the rest plain."""
    fim = count // 2 if FimFormat.from_tokenizer(tokenizer) is not None else 0
    plain = count - fim
    plains = [(PLAIN_PROMPTS[i % len(PLAIN_PROMPTS)], None) for i in range(plain)]
    fims = [FIM_PROMPTS[i % len(FIM_PROMPTS)] for i in range(fim)]
    return [*plains, *fims]


def greedy(
    model: Any, tokenizer: Any, prompts: list[tuple[str, str | None]], max_new_tokens: int
) -> list[str]:
    """Greedy completions (no post-processing) of ``(prefix, suffix or None)`` prompts, in order."""
    from codetune.generation.engines import engine_for
    from codetune.generation.generator import Generator
    from codetune.generation.params import sampling_params
    from codetune.generation.request import GenerationRequest

    params = sampling_params(temperature=0.0, max_new_tokens=max_new_tokens)
    generator = Generator(engine_for(model, tokenizer))
    requests = [
        GenerationRequest(prompt=prefix, suffix=suffix, params=params, postprocess=False)
        for prefix, suffix in prompts
    ]
    texts = [""] * len(requests)
    for i, completions in generator.complete(requests):
        texts[i] = completions[0].text
    return texts


def compare(prompts: list[tuple[str, str | None]], reference: list[str], candidate: list[str]) -> Parity:
    """Count the prompts whose two texts are equal, keeping the differing ones for a report."""
    differing = [
        {"prefix": prefix, "suffix": suffix, "reference": a, "exported": b}
        for (prefix, suffix), a, b in zip(prompts, reference, candidate, strict=True)
        if a != b
    ]
    return Parity(len(prompts) - len(differing), len(prompts), differing)
