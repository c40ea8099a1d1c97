"""What every config shares: the strict pydantic base and field types used by more than one stage.

Stage configs import this module, never ``codetune.config``: the Recipe (config.py) is built from
the stage registry, so config.py depends on the stages and not the other way round.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, assignments are validated, and numbers are
    finite (``lr: .inf`` would train to NaN and still exit 0)."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False
    )


class LanguageSpec(StrictModel):
    """A language added from a recipe without code: extensions and a tree-sitter grammar name."""

    name: str = Field(description="Name used by `--language` and `collect.language`.")
    extensions: list[str] = Field(description="File extensions, e.g. ['.elm'].")
    grammar: str | None = Field(
        None, description="tree-sitter-language-pack grammar name (None: no parse check)."
    )
    line_comment: str | None = Field(None, description="Line comment marker, e.g. '--'.")
    block_comment: tuple[str, str] | None = Field(
        None, description="Block comment open/close, e.g. ['{-', '-}']."
    )
    unit_types: list[str] = Field(
        default_factory=list, description="tree-sitter node types cut as syntax units."
    )
