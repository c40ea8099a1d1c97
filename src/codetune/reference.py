"""Render the recipe format reference from the pydantic models, so the docs cannot drift.

`python -m codetune.reference > docs/recipe-reference.md`; a test fails when the file is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    for noise in ("typing.", "pathlib.", "codetune.config.", "codetune.schema.", "<class '", "'>"):
        text = text.replace(noise, "")
    return text.replace("PosixPath", "Path").replace("|", "\\|")


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, BaseModel):
        return "{...}"
    if isinstance(value, Path):
        value = str(value)
    text = json.dumps(value) if isinstance(value, str) else repr(value)
    text = text.replace("|", "\\|")
    return text if len(text) < 60 else text[:57] + "..."


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``Opts`` or ``Opts | None``), if any."""
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _section(title: str, model: type[BaseModel], level: int = 2) -> list[str]:
    lines = [
        f"{'#' * level} `{title}`",
        "",
        (model.__doc__ or "").strip(),
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{name}` | {_type_name(field.annotation)} | `{_default(field)}` | {description} |")
    lines.append("")
    for name, field in model.model_fields.items():
        nested = _nested_model(field.annotation)
        if nested is not None:
            lines += _section(f"{title}.{name}", nested, level=min(level + 1, 4))
    return lines


def render_recipe_reference() -> str:
    """Markdown for every recipe section, in stage order."""
    from codetune.config import recipe_model
    from codetune.schema import LanguageSpec
    from codetune.stages import STAGES

    recipe = recipe_model()
    top = {name: f for name, f in recipe.model_fields.items() if name in {"name", "workdir", "languages"}}
    lines = [
        "# Recipe reference",
        "",
        "Generated from codetune's pydantic models by `python -m codetune.reference`; do not edit by hand.",
        "A recipe is a YAML mapping; every stage section is optional, and unknown keys are errors.",
        "Any field can be overridden on the command line: `codetune run R.yaml --set train.lr=1e-4`.",
        "",
        "## top level",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in top.items():
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {_type_name(field.annotation)} | `{_default(field)}` | {description} |")
    lines.append("")
    lines += _section("languages[]", LanguageSpec)
    for stage in STAGES:
        lines += _section(stage.name, stage.config_class)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_recipe_reference())
