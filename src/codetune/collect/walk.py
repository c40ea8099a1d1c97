"""List the candidate files of one source folder: the one walker of every folder codetune reads.

In a git work tree the files are those git lists (tracked ones, even when a .gitignore matches them,
plus untracked ones that are not ignored); elsewhere the folder is walked, honouring .gitignore files.
Either way ``skip_dirs`` are left out, links that resolve outside the folder (file or folder links,
chains of links) are never followed, and every file left out on purpose or by accident is counted
with its reason. ``collect`` lists sources with :func:`walk_files`; ``serve --repo`` indexes a folder
with :func:`walk_folder`, under the same rules.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.languages import Language

log = logging.getLogger(__name__)

# Reasons for files left out before they are read; the manifest counts them apart from dropped files.
SKIP_REASONS = ("gitignored", "skip_dirs")
# Configuration git must never take from a repository it lists (fsmonitor would run a command).
SAFE_GIT = ("-c", "core.fsmonitor=false", "-c", "core.untrackedCache=false")


def _spec(patterns: list[str]) -> Any:
    import pathspec

    return pathspec.PathSpec.from_lines("gitwildmatch", patterns) if patterns else None


@dataclass
class Candidates:
    """Which files of a source are collected: the language's extensions (or ``include``) minus ``exclude``."""

    language: Language
    include: Any
    exclude: Any

    @classmethod
    def from_config(cls, language: Language, cfg: Any) -> Candidates:
        return cls(language, _spec(cfg.include), _spec(cfg.exclude))

    def __call__(self, rel: str) -> bool:
        if self.include is not None:
            if not self.include.match_file(rel):
                return False
        elif Path(rel).suffix.lower() not in self.language.extensions:
            return False
        return self.exclude is None or not self.exclude.match_file(rel)


@dataclass(frozen=True)
class WalkRules:
    """Which folders a walk leaves out, and whether it counts the candidate files inside them."""

    skip_dirs: frozenset[str] = frozenset()  # never entered
    output_dirs: frozenset[str] = frozenset()  # left out when they hold build output
    gitignore: bool = False  # honour .gitignore files
    hidden: bool = True  # enter folders whose name starts with "."
    count_skipped: bool = True  # count the candidates in folders left out (walks them: slower)
    limit: int | None = None  # stop after this many files

    @classmethod
    def of(cls, cfg: Any) -> WalkRules:
        """The rules of a collect config."""
        return cls(frozenset(cfg.skip_dirs), frozenset(cfg.output_dirs), cfg.gitignore)


def walk_files(
    root: Path, language: Language, cfg: Any, *, use_git: bool = True
) -> tuple[list[tuple[str, str]], Counter[str]]:
    """Sorted (absolute path, path relative to root) of candidate files, and counts of what was left out.

    ``use_git=False`` walks the folder even when it holds a git repository (an unpacked archive's
    ``.git`` is not to be trusted).
    """
    root = Path(os.path.realpath(root))
    wanted = Candidates.from_config(language, cfg)
    rules = WalkRules.of(cfg)
    listing = _git_listing(root, cfg.gitignore) if use_git else None
    if listing is None:
        found, problems = _walk(root, "", wanted, rules)
    else:
        found, problems = _from_git(root, listing, wanted, rules)
    return _named(found, problems), problems


def walk_folder(
    root: Path, wanted: Callable[[str], bool], rules: WalkRules
) -> tuple[list[tuple[str, str]], Counter[str]]:
    """Sorted (absolute path, path relative to root) of the files under ``root`` that ``wanted``
    takes (by relative path), walked under ``rules``; counts of what was left out and why."""
    root = Path(os.path.realpath(root))
    found, problems = _walk(root, "", wanted, rules)
    return _named(found, problems), problems


def _named(found: list[tuple[str, str]], problems: Counter[str]) -> list[tuple[str, str]]:
    found = _utf8_names(found, problems)
    found.sort(key=lambda item: item[1])
    return found


def _utf8_names(found: list[tuple[str, str]], problems: Counter[str]) -> list[tuple[str, str]]:
    """Leave out (counted as ``name_not_utf8``) files whose path is not UTF-8: a corpus stores paths
    as text, and such a name (held as lone surrogates) cannot be written there."""
    kept = []
    for path, rel in found:
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            problems["name_not_utf8"] += 1
            log.info("file name not UTF-8, skipped: %r", rel)
            continue
        kept.append((path, rel))
    return kept


def inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path``, every link on the way resolved, lies in the folder ``root`` (resolved)."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _skipped_dir(rel: str, skip: set[str]) -> bool:
    return any(part in skip for part in rel.split("/")[:-1])


# What a build tool leaves in its output folder (Gradle, Maven, CMake, Bazel, setuptools, Elm,
# create-react-app, tsc): one of these makes a `build` folder output rather than sources.
BUILD_OUTPUT_MARKERS = frozenset(
    {
        "tmp",
        "classes",
        "intermediates",
        "generated",
        "libs",
        "reports",
        "kotlin",
        "outputs",
        "test-results",
        "CMakeFiles",
        "CMakeCache.txt",
        "build.ninja",
        ".ninja_log",
        "compile_commands.json",
        "asset-manifest.json",
        "tsconfig.tsbuildinfo",
        "bdist",
    }
)


def is_build_output(folder: str | Path) -> bool:
    """Whether a folder holds a build tool's output (see BUILD_OUTPUT_MARKERS), not sources."""
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return any(name in BUILD_OUTPUT_MARKERS or name.startswith(("lib.", "bdist.")) for name in names)


class OutputDirs:
    """Which folders named in ``output_dirs`` hold build output (each folder looked at once)."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root, self.names = root, set(names)
        self.seen: dict[str, bool] = {}

    def skipped(self, rel: str) -> bool:
        """Whether a file at ``rel`` lies in a build output folder."""
        parts = rel.split("/")[:-1]
        for depth, part in enumerate(parts):
            if part in self.names:
                folder = "/".join(parts[: depth + 1])
                if folder not in self.seen:
                    self.seen[folder] = is_build_output(self.root / folder)
                if self.seen[folder]:
                    return True
        return False


# ---- git work trees -------------------------------------------------------------------------------


@dataclass
class GitListing:
    files: list[str]  # tracked, plus untracked files that are not ignored
    ignored: list[str]  # untracked files a .gitignore matches


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes] | None:
    try:
        return subprocess.run(
            ["git", *SAFE_GIT, "-C", str(root), *args],
            capture_output=True,
            timeout=600,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def _git_listing(root: Path, gitignore: bool) -> GitListing | None:
    """The files git knows under ``root``, or None when ``root`` is not inside a usable work tree."""
    inside = _git(root, "rev-parse", "--is-inside-work-tree")
    if inside is None or inside.returncode != 0 or inside.stdout.strip() != b"true":
        return None
    ignored_root = _git(root, "check-ignore", "-q", ".")
    if ignored_root is not None and ignored_root.returncode == 0:
        return None  # an ignored folder inside some repository: git knows nothing useful about it
    standard = ["--exclude-standard"] if gitignore else []
    listed = _git(root, "ls-files", "-z", "--cached", "--others", *standard)
    if listed is None or listed.returncode != 0:
        return None
    ignored: list[str] = []
    if gitignore:
        found = _git(root, "ls-files", "-z", "--others", "--ignored", "--exclude-standard")
        if found is not None and found.returncode == 0:
            ignored = _split(found.stdout)
    return GitListing(sorted(set(_split(listed.stdout))), ignored)


def _split(output: bytes) -> list[str]:
    return [os.fsdecode(item) for item in output.split(b"\0") if item]


def _from_git(
    root: Path, listing: GitListing, wanted: Candidates, rules: WalkRules
) -> tuple[list[tuple[str, str]], Counter[str]]:
    skip = set(rules.skip_dirs)
    output = OutputDirs(root, list(rules.output_dirs))
    problems: Counter[str] = Counter()
    found: list[tuple[str, str]] = []
    for rel in listing.files:
        path = str(root / rel)
        if _skipped_dir(rel, skip) or output.skipped(rel):
            if wanted(rel):
                problems["skip_dirs"] += 1
            continue
        if os.path.islink(path) and not inside(path, root):
            problems["link_outside"] += 1
            continue
        if os.path.isdir(path) and not os.path.islink(path):  # a submodule: walk its checkout
            sub_found, sub_problems = _walk(root, rel, wanted, rules)
            found.extend(sub_found)
            problems.update(sub_problems)
            continue
        if not os.path.lexists(path):
            continue  # deleted in the work tree but not yet in the index
        if wanted(rel):
            found.append((path, rel))
    for rel in listing.ignored:
        if wanted(rel):
            problems["skip_dirs" if _skipped_dir(rel, skip) else "gitignored"] += 1
    return found, problems


# ---- plain folders --------------------------------------------------------------------------------


def _read_gitignore(folder: Path) -> Any:
    path = folder / ".gitignore"
    try:
        return (
            _spec(path.read_text(encoding="utf-8", errors="replace").splitlines()) if path.is_file() else None
        )
    except OSError:
        return None


def _ignored(rel: str, is_dir: bool, ignores: list[tuple[str, Any]]) -> bool:
    for base, spec in ignores:
        sub = rel[len(base) + 1 :] if base else rel
        if spec.match_file(sub + "/" if is_dir else sub):
            return True
    return False


def _count_wanted(folder: str, rel: str, wanted: Callable[[str], bool]) -> int:
    """Candidate files under a folder that is not entered (links not followed)."""
    count = 0
    for dirpath, _, names in os.walk(folder):
        sub = os.path.relpath(dirpath, folder)
        base = rel if sub == "." else f"{rel}/{sub}"
        count += sum(1 for name in names if wanted(f"{base}/{name}"))
    return count


def _walk(
    root: Path, start: str, wanted: Callable[[str], bool], rules: WalkRules
) -> tuple[list[tuple[str, str]], Counter[str]]:
    """Walk ``root/start``; survive link loops and unreadable folders (counted, not fatal)."""
    skip = set(rules.skip_dirs)
    outputs = set(rules.output_dirs)
    problems: Counter[str] = Counter()
    found: list[tuple[str, str]] = []
    seen_dirs: set[tuple[int, int]] = set()
    # Each stack entry: (folder, relative path, gitignore specs in force as (base relpath, spec)).
    stack: list[tuple[Path, str, list[tuple[str, Any]]]] = [(root / start if start else root, start, [])]
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
        if rules.gitignore:
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
            if entry.is_symlink() and not inside(entry.path, root):
                problems["link_outside"] += 1
                continue
            try:
                is_dir = entry.is_dir()  # follows links, which stay inside the root
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
            if is_dir:
                reason = (
                    "skip_dirs"
                    if entry.name in skip
                    or (entry.name in outputs and is_build_output(entry.path))
                    or (not rules.hidden and entry.name.startswith("."))
                    else "gitignored"
                    if _ignored(child_rel, True, ignores)
                    else None
                )
                if reason is None:
                    stack.append((Path(entry.path), child_rel, ignores))
                elif rules.count_skipped and not entry.is_symlink():
                    problems[reason] += _count_wanted(entry.path, child_rel, wanted)
                continue
            if not wanted(child_rel):
                continue
            if _ignored(child_rel, False, ignores):
                problems["gitignored"] += 1
                continue
            found.append((entry.path, child_rel))
            if rules.limit is not None and len(found) >= rules.limit:
                problems["over_limit"] += 1
                return found, +problems
    return found, +problems
