"""The Recipe: one optional section per registered stage (codetune.stages), plus YAML loading.

Logic never reads raw dicts: YAML is validated here, unknown keys are errors that name the key,
and command-line options override fields with dotted paths (``train.lr=1e-4``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from codetune import stages
from codetune.errors import ConfigError, InputError
from codetune.schema import LanguageSpec, StrictModel
from codetune.stages import STAGE_NAMES

__all__ = [
    "STAGES",
    "LanguageSpec",
    "StrictModel",
    "apply_overrides",
    "load_recipe",
    "recipe_model",
    "validate",
]

# Stage names in pipeline order, kept for callers of the first version; the registry is codetune.stages.
STAGES = STAGE_NAMES


def describe_validation_error(error: ValidationError, where: str = "config") -> str:
    """One line per problem, naming the key path, e.g. ``train.lr: Input should be a valid number``."""
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"]) or "<root>"
        msg = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"{loc}: {msg}")
    return f"invalid {where}: " + "; ".join(lines)


def validate(model_cls: type[BaseModel], data: dict[str, Any], where: str = "config") -> Any:
    """Validate ``data`` into ``model_cls`` or raise a ConfigError naming the bad keys."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, where)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=1e-4`` -> (["train", "lr"], 1e-4); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    except ValueError:  # an integer longer than Python converts (4,300 digits)
        raise ConfigError(
            f"override {key.strip()}: a number with {len(raw.strip()):,} digits is too long"
        ) from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (before validation, so bad keys are still reported)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = first_line.get(key)
            except TypeError:
                continue  # an unhashable key: SafeLoader reports it
            if seen is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {seen})", key_node.start_mark
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with a clear error for a missing, non-UTF-8, malformed or duplicated-key file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"recipe not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ConfigError(f"{path} is not UTF-8 text (invalid byte on line {line})") from None
    try:
        data = yaml.load(text, Loader=_RecipeLoader)  # a SafeLoader: no tags, no code
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"malformed YAML in {path}{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"malformed YAML in {path}: nested too deeply") from None
    except ValueError as error:  # int() refuses a literal of more than 4,300 digits
        raise ConfigError(f"{path} holds a number too long to read ({str(error).split(':')[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, not {type(data).__name__}")
    return data


def recipe_model() -> type[BaseModel]:
    """Build the Recipe model class from the stage configs (each stage section optional)."""
    from pydantic import create_model

    fields: dict[str, Any] = {
        "name": (str, Field("recipe", description="A name for the run, used in reports.")),
        "workdir": (
            Path,
            Field(Path("out"), description="Folder under which stages write when no path is given."),
        ),
        "languages": (
            list[LanguageSpec],
            Field(default_factory=list, description="Extra languages: extensions + grammar, no code."),
        ),
    }
    for stage in stages.STAGES:
        model = stage.config_class
        fields[stage.name] = (model | None, Field(None, description=model.__doc__))
    return create_model("Recipe", __base__=StrictModel, **fields)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Any:
    """Load, override and validate a recipe YAML file; relative paths resolve against ``workdir``."""
    data = apply_overrides(load_yaml(path), overrides or [])
    return validate(recipe_model(), data, where=f"recipe {path}")
