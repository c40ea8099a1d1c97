"""Sources: each kind (folder, git, github, archive, docs) lives in its own module and registers one
resolver that turns a source string into :class:`Source` objects, each a folder to walk once fetched.

Adding a kind means one module with ``@register_source("name")`` and one line in ``_KIND_MODULES``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Source:
    """One unit of resumable work: a folder (possibly still to be fetched) whose files belong to ``repo``.

    ``fetch`` returns the folder; it may add counts of skipped members to ``extra["skipped"]`` and the
    commit it checked out to ``extra["commit"]``. ``use_git`` says whether git may list the folder's
    files (never for unpacked archives, whose ``.git`` nobody vouches for).
    """

    kind: str
    origin: str
    repo: str
    fetch: Callable[[], Path] = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict)
    use_git: bool = True

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.kind}\0{self.origin}\0{self.repo}".encode()).hexdigest()[:16]


SourceResolver = Callable[[str, Any, Path], list[Source]]
SOURCE_KINDS: dict[str, SourceResolver] = {}
# Module per kind, imported when sources are first resolved (each registers itself).
_KIND_MODULES = ("folder", "git", "github", "archive", "docs")


def register_source(name: str) -> Callable[[SourceResolver], SourceResolver]:
    """Register a resolver turning a source string into Sources."""

    def wrap(fn: SourceResolver) -> SourceResolver:
        SOURCE_KINDS[name] = fn
        return fn

    return wrap


def _load_kinds() -> None:
    for name in _KIND_MODULES:
        importlib.import_module(f"{__name__}.{name}")


ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")


def source_kind(text: str) -> str:
    """Guess the kind of a source string: github, docs, git, archive or local."""
    if text.startswith("github:"):
        return "github"
    if text.startswith("docs:"):
        return "docs"
    lowered = text.lower()
    if lowered.startswith(("http://", "https://", "git://", "ssh://", "file://", "git@")) or (
        lowered.endswith(".git") and not Path(text).is_dir()
    ):
        return "git"
    if lowered.endswith(ARCHIVE_SUFFIXES):
        return "archive"
    return "local"


def resolve_sources(cfg: Any, work: Path) -> list[Source]:
    """Every Source of a config, in order; fails early on a missing local path."""
    _load_kinds()
    result: list[Source] = []
    for text in cfg.sources:
        result.extend(SOURCE_KINDS[source_kind(text)](text, cfg, work))
    return result


def cache_root(cfg: Any) -> Path:
    """Where clones and unpacked archives live between runs."""
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("codetune")) / "collect"


def repo_name(text: str) -> str:
    """A name that is unique and stable for one repository: ``host/owner/name`` for hosted URLs, the
    absolute path for local paths and file:// URLs (so three different ``.../repo`` stay apart)."""
    if "://" not in text and not text.startswith("git@"):
        return os.path.realpath(os.path.expanduser(text))
    scp = "://" not in text  # git@host:owner/name.git
    parsed = urllib.parse.urlparse("ssh://" + text.replace(":", "/", 1) if scp else text)
    if parsed.scheme == "file":
        return os.path.realpath(urllib.parse.unquote(parsed.path))
    host = parsed.hostname or ""
    path = "/".join(part for part in parsed.path.split("/") if part).removesuffix(".git")
    return f"{host}/{path}" if host else path
