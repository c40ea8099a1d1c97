"""Walk a folder for files of one language: skip vendored/build folders, honour .gitignore and
include/exclude globs, and survive symlink loops and unreadable folders (counted, not fatal)."""

from __future__ import annotations

import errno
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from codetune.languages import Language

log = logging.getLogger(__name__)


def _spec(patterns: list[str]) -> Any:
    import pathspec

    return pathspec.PathSpec.from_lines("gitwildmatch", patterns) if patterns else None


def _read_gitignore(folder: Path) -> Any:
    path = folder / ".gitignore"
    try:
        return (
            _spec(path.read_text(encoding="utf-8", errors="replace").splitlines()) if path.is_file() else None
        )
    except OSError:
        return None


def walk_files(root: Path, language: Language, cfg: Any) -> tuple[list[tuple[str, str]], Counter[str]]:
    """Return sorted (absolute path, path relative to root) of candidate files and counts of problems."""
    include, exclude = _spec(cfg.include), _spec(cfg.exclude)
    skip = set(cfg.skip_dirs)
    problems: Counter[str] = Counter()
    found: list[tuple[str, str]] = []
    seen_dirs: set[tuple[int, int]] = set()
    # Each stack entry: (folder, relative path, gitignore specs in force as (base relpath, spec)).
    stack: list[tuple[Path, str, list[tuple[str, Any]]]] = [(root, "", [])]
    while stack:
        folder, rel, ignores = stack.pop()
        try:
            info = folder.stat()
        except OSError as error:
            problems["symlink_loop" if error.errno == errno.ELOOP else "unreadable"] += 1
            continue
        if (info.st_dev, info.st_ino) in seen_dirs:
            problems["symlink_loop"] += 1
            log.info("symlink loop or repeated folder skipped: %s", folder)
            continue
        seen_dirs.add((info.st_dev, info.st_ino))
        if cfg.gitignore:
            spec = _read_gitignore(folder)
            if spec is not None:
                ignores = [*ignores, (rel, spec)]
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            problems["unreadable"] += 1
            continue
        for entry in entries:
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir()  # follows symlinks
                is_file = not is_dir and entry.is_file()
            except OSError as error:
                problems["symlink_loop" if error.errno == errno.ELOOP else "unreadable"] += 1
                continue
            if not is_dir and not is_file:
                if entry.is_symlink():
                    try:
                        os.stat(entry.path)
                        problems["unreadable"] += 1
                    except OSError as error:
                        problems["symlink_loop" if error.errno == errno.ELOOP else "unreadable"] += 1
                continue
            if _ignored(child_rel, is_dir, ignores):
                continue
            if is_dir:
                if entry.name not in skip:
                    stack.append((Path(entry.path), child_rel, ignores))
                continue
            if include is not None:
                if not include.match_file(child_rel):
                    continue
            elif Path(entry.name).suffix.lower() not in language.extensions:
                continue
            if exclude is not None and exclude.match_file(child_rel):
                continue
            found.append((entry.path, child_rel))
    found.sort(key=lambda item: item[1])
    return found, problems


def _ignored(rel: str, is_dir: bool, ignores: list[tuple[str, Any]]) -> bool:
    for base, spec in ignores:
        sub = rel[len(base) + 1 :] if base else rel
        if spec.match_file(sub + "/" if is_dir else sub):
            return True
    return False
