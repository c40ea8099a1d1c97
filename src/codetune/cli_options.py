"""Command-line options made from a stage's config fields: name, type, help, choices and default.

Each field of a simple type (text, number, flag, path, a choice, or a list of them) is one option,
``--field-name``, documented by the field's own description and default, so the help of a command
cannot drift from the config it fills. A command says only how it spells some fields (a short flag,
an argument instead of an option, another name, a required one, a command-line default of its own);
anything else, and nested fields, can still be given as ``--set KEY=VALUE``.

Choices are listed, not enforced here: the config validates every value, so a bad one is the same
one-line error from the command line, a recipe or ``--set``.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

SIMPLE = (str, int, float, bool, Path)


@dataclass(frozen=True)
class Spelling:
    """How one command spells its config's fields on the command line."""

    rename: dict[str, str] = field(default_factory=dict)  # field -> option name (no dashes)
    short: dict[str, str] = field(default_factory=dict)  # field -> "-x"
    arguments: tuple[str, ...] = ()  # fields given as positional arguments
    required: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)  # command-line defaults the config lacks
    skip: tuple[str, ...] = ()  # fields the command takes its own way
    notes: dict[str, str] = field(default_factory=dict)  # field -> text added to its help


def option_type(annotation: Any) -> tuple[Any, tuple[str, ...]] | None:
    """The command-line type of a field (Literal choices as text) and its choices; None when the field
    is only settable with ``--set`` (a mapping, a nested section)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return option_type(inner[0]) if len(inner) == 1 else None
    if typing.get_origin(annotation) is Literal:
        return str, tuple(str(a) for a in args)
    if typing.get_origin(annotation) is list and len(args) == 1:
        found = option_type(args[0])
        if found is None or typing.get_origin(found[0]) is list:
            return None
        return list[found[0]], found[1]
    if annotation in SIMPLE:
        return annotation, ()
    return None


def _default(info: Any) -> Any:
    if info.default is not PydanticUndefined:
        return info.default
    if info.default_factory is not None:
        return info.default_factory()
    return PydanticUndefined


def _help(info: Any, choices: tuple[str, ...], default: Any) -> str:
    text = (info.description or "").strip()
    if choices:
        text += f" One of: {', '.join(choices)}."
    if default is not PydanticUndefined and default not in (None, [], ""):
        shown = json.dumps(default) if isinstance(default, str) else str(default)
        text += f" (default: {shown})"
    return text.strip()


def field_parameters(config: type[BaseModel], spelling: Spelling) -> list[inspect.Parameter]:
    """One typer parameter per simple field of ``config`` (arguments first), named as the field."""
    arguments, options = [], []
    for name, info in config.model_fields.items():
        found = option_type(info.annotation)
        if name in spelling.skip or found is None:
            continue
        kind, choices = found
        default = spelling.defaults.get(name, _default(info))
        required = name in spelling.required or name in spelling.arguments
        help_text = _help(info, choices, PydanticUndefined if required else default)
        if name in spelling.notes:
            help_text = f"{help_text} {spelling.notes[name]}"
        if name in spelling.arguments:
            declared = typer.Argument(help=help_text, show_default=False)
            arguments.append(_parameter(name, kind, declared, ... if required else None))
            continue
        flag = "--" + spelling.rename.get(name, name).replace("_", "-")
        if kind is bool:
            flag = f"{flag}/--no-{flag[2:]}"
        decls = [flag, *([spelling.short[name]] if name in spelling.short else [])]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        env = extra.get("env")
        declared = typer.Option(
            *decls,
            help=help_text,
            show_default=False,
            metavar=f"[{'|'.join(choices)}]" if choices else None,
            envvar=env,
            show_envvar=bool(env),
        )
        cli_default = spelling.defaults.get(name)
        options.append(_parameter(name, kind, declared, ... if required else cli_default))
    return arguments + options


def _parameter(name: str, kind: Any, declared: Any, default: Any) -> inspect.Parameter:
    annotation = Annotated[kind if default is ... else kind | None, declared]  # type: ignore[operator]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def config_command(
    config: type[BaseModel],
    spelling: Spelling,
    run: typing.Callable[..., None],
    *,
    extra: list[inspect.Parameter] = (),  # type: ignore[assignment]
    doc: str | None = None,
) -> typing.Callable[..., None]:
    """A command function for typer: the config's fields as options, then ``extra`` parameters (not
    config fields); it calls ``run(given, **extras)`` with the fields given (None ones dropped)."""
    fields = field_parameters(config, spelling)
    names = {p.name for p in fields}

    def command(**values: Any) -> None:
        given = {k: v for k, v in values.items() if k in names and v is not None}
        run(given, **{k: v for k, v in values.items() if k not in names})

    params = fields + list(extra)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc or config.__doc__
    return command
