"""The dataset format registry: one file per format under ``formats/``, one row per format below.

Adding a format is one new file (a :class:`Format` subclass, see ``base.py`` and docs/build.md) and
one row in :data:`FORMATS`; tests/dataset/test_format_matrix.py then builds it like every other.
"""

from __future__ import annotations

import importlib

from codetune.dataset.config import BuildConfig
from codetune.dataset.formats.base import Batch, Format, Kind, Reserve, tokenize
from codetune.errors import InputError

__all__ = ["FORMATS", "Batch", "Format", "Kind", "Reserve", "format_class", "get_format", "tokenize"]

# name -> "module:Class" under codetune.dataset.formats (imported when first used)
FORMATS: dict[str, str] = {
    "files": "files:Files",
    "windows": "windows:Windows",
    "units": "units:Units",
    "instruct": "instruct:Instruct",
    "seq2seq": "seq2seq:Seq2Seq",
    "code_json": "code_json:CodeJson",
    "feedback": "feedback:Feedback",
}


def format_class(name: str) -> type[Format]:
    """The class registered as ``name``, or a clear error listing the known ones."""
    if name not in FORMATS:
        raise InputError(f"unknown format {name!r}; known: {', '.join(sorted(FORMATS))}")
    module, _, cls = FORMATS[name].partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def get_format(cfg: BuildConfig) -> Format:
    """The format ``cfg.format`` names, set up with ``cfg``."""
    return format_class(cfg.format)(cfg)
