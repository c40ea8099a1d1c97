"""A local folder, used in place. A bare git repository given as a path is collected like a git URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codetune.collect.sources import Source, register_source, repo_name
from codetune.errors import InputError


def is_bare_repository(path: Path) -> bool:
    """A bare git dir: HEAD, objects/ and refs/ at the top and no work tree."""
    return (
        (path / "HEAD").is_file()
        and (path / "objects").is_dir()
        and (path / "refs").is_dir()
        and not (path / ".git").exists()
    )


@register_source("local")
def resolve_folder(text: str, cfg: Any, work: Path) -> list[Source]:
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"source not found: {text}")
    if not path.is_dir():
        raise InputError(f"source is not a folder, archive or git repository: {text}")
    root = path.resolve()
    if is_bare_repository(root):
        from codetune.collect.sources.git import git_source

        return [git_source(root.as_uri(), cfg)]
    return [Source("local", str(root), repo_name(str(root)), lambda: root)]
