"""How `codetune generate` runs its rows: one runner per executor, each over the engine registry.

``local``: this process (or each `accelerate launch` rank, one part file each); ``ray``: one engine per
Ray task over the cluster at ``address``. Both resume from the ids already in the output.
"""

from __future__ import annotations

from collections.abc import Callable

from codetune.generation.batch import generate_file
from codetune.generation.config import GenerateConfig
from codetune.generation.ray import generate_file_ray
from codetune.stage import StageResult

RUNNERS: dict[str, Callable[[GenerateConfig], StageResult]] = {
    "local": generate_file,
    "ray": generate_file_ray,
}


def generate(cfg: GenerateConfig) -> StageResult:
    """The generate stage: ``cfg``'s rows through its executor's runner."""
    return RUNNERS[cfg.executor](cfg)
