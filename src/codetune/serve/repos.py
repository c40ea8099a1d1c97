"""The repositories a server indexes (``codetune serve --repo DIR``) and the context it retrieves from them.

What a repository serves: the source files (of a language codetune knows, up to ``MAX_FILE_BYTES``)
under its folder, listed by collect's walker (``codetune.collect.walk``) under the same rules: a link
that leaves the folder (a file or folder link, or a chain of them) is never followed, and a file is
checked again when it is read, so one swapped for such a link after the scan is not read either.
Version control, dependency, cache and build folders and hidden files are left out.

Each ``--repo`` folder is one :class:`~codetune.context.RepoIndex`; a request's context only ever comes
from the one repository its file belongs to. Refresh is a stat scan (mtime and size of each source
file), at most once per ``refresh_s`` and only when a request comes: a changed repository is indexed
again, so a file added, edited or deleted shows in the next completion without a watcher thread.
The server runs the scan and the indexing in a worker thread (:meth:`ServedRepos.refreshed`): indexing
a large repository takes seconds, and on the event loop it would stall every other request. Meanwhile
other requests get the old index, swapped for the new one in one assignment when it is ready, and a
repository being indexed is not indexed a second time at once.

Which repository and file a request is in, from what its protocol gives (in this order): a repository
name (Tabby's ``git_url``, Copilot's ``nwo``: matched to a folder's git remotes first, then to its
name), an absolute path under a ``--repo`` folder, a relative path that exists in
one repository (several: the one whose copy shares most lines with the text around the cursor), a
path starting with a repository's name, the files of the chunks the editor sent (llama.cpp's
``input_extra``), and last the file sharing most lines with the cursor's text (a client that names
no file). A new file not saved yet still gets its repository from its folder.
"""

from __future__ import annotations

import asyncio
import configparser
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from codetune.collect.walk import WalkRules, inside, walk_folder
from codetune.context import ContextOptions, RepoIndex, Snippet, build_context
from codetune.errors import InputError

logger = logging.getLogger(__name__)

# Folders no editor completes in: version control, dependencies, caches and build outputs.
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "elm-stuff",
        "dist",
        "build",
        "target",
    }
)
MAX_FILE_BYTES = 256_000  # a larger file is generated or data, not code a completion needs
MAX_FILES = 20_000  # per repository: a scan stays a few milliseconds
_MIN_LINE = 6  # shorter lines (`}`, `return`) say nothing about which file a cursor is in


# The walk of a served repository: no counting inside the folders it skips (a stat scan every few
# seconds must not walk node_modules), at most MAX_FILES files.
_RULES = WalkRules(SKIP_DIRS, hidden=False, count_skipped=False, limit=MAX_FILES)


def _source(rel: str) -> bool:
    from codetune.languages import language_for_path

    name = rel.rsplit("/", 1)[-1]
    return not name.startswith(".") and language_for_path(name) is not None


def _source_files(root: Path) -> tuple[dict[str, tuple[int, int]], Counter[str]]:
    """Relative POSIX path -> (mtime_ns, size) of each source file of a known language under ``root``,
    and counts of what was left out and why (``link_outside``, ``too_large``, ...)."""
    listed, problems = walk_folder(root, _source, _RULES)
    if problems.get("over_limit"):
        logger.warning("%s: more than %d source files; the rest are not indexed", root, MAX_FILES)
    found: dict[str, tuple[int, int]] = {}
    for path, rel in listed:
        try:
            info = os.stat(path)
        except OSError:  # deleted between the listing and the stat
            continue
        if info.st_size <= MAX_FILE_BYTES:
            found[rel] = (info.st_mtime_ns, info.st_size)
        else:
            problems["too_large"] += 1
    return found, problems


def _lines(text: str) -> frozenset[str]:
    return frozenset(s for line in text.split("\n") if len(s := line.strip()) >= _MIN_LINE)


@dataclass(frozen=True)
class RepoSnapshot:
    """What one repository's files looked like at a scan, and their index: replaced whole, never edited,
    so a request reading it while a new one is built sees one consistent state."""

    stamps: dict[str, tuple[int, int]] = field(default_factory=dict)
    index: RepoIndex | None = None
    lines: dict[str, frozenset[str]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # files left out at the scan, by reason


@dataclass
class ServedRepo:
    """One ``--repo`` folder: its name, its git remotes (owner/name) and its latest snapshot."""

    name: str
    root: Path
    snapshot: RepoSnapshot = field(default_factory=RepoSnapshot)
    remotes: frozenset[str] = frozenset()
    # held while this repository is scanned and indexed: a second refresh skips it meanwhile
    building: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def stamps(self) -> dict[str, tuple[int, int]]:
        return self.snapshot.stamps

    @property
    def index(self) -> RepoIndex | None:
        return self.snapshot.index

    @property
    def lines(self) -> dict[str, frozenset[str]]:
        return self.snapshot.lines

    @property
    def skipped(self) -> dict[str, int]:
        return self.snapshot.skipped

    def load(self, stamps: dict[str, tuple[int, int]], skipped: Counter[str] | None = None) -> None:
        """Index the files in ``stamps`` again (texts read now); the old snapshot serves until then."""
        files: dict[str, str] = {}
        skipped = Counter(skipped or {})
        for path in stamps:
            full = self.root / path
            if not inside(full, self.root):  # swapped for a link leaving the folder since the scan
                skipped["link_outside"] += 1
                continue
            try:
                files[path] = full.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):  # deleted meanwhile, or not text
                continue
        self.snapshot = RepoSnapshot(
            {path: stamps[path] for path in files},
            RepoIndex(self.name, files),
            {path: _lines(text) for path, text in files.items()},
            dict(skipped),
        )


_OWNER_NAME = re.compile(r"[:/]([^/:]+)/([^/]+?)(?:\.git)?/*$")


def owner_name(url: str) -> str | None:
    """``owner/name`` of a repository URL (https, ssh, ``git@host:owner/name.git``), lower case."""
    match = _OWNER_NAME.search(url.strip())
    return f"{match[1]}/{match[2]}".lower() if match else None


def git_remotes(root: Path) -> frozenset[str]:
    """``owner/name`` of each remote in the git config of ``root`` (none when it is not a clone).

    Read from ``.git/config`` rather than by running git: no subprocess per folder, and no git needed.
    A worktree's or submodule's ``.git`` file points at its git folder, whose ``commondir`` holds the config.
    """
    git = root / ".git"
    try:
        if git.is_file():
            pointed = git.read_text(encoding="utf-8").strip().removeprefix("gitdir:").strip()
            git = (root / pointed).resolve()
            common = git / "commondir"
            if common.is_file():
                git = (git / common.read_text(encoding="utf-8").strip()).resolve()
        config = configparser.ConfigParser(strict=False, interpolation=None)
        config.read(git / "config", encoding="utf-8")
    except (OSError, UnicodeDecodeError, configparser.Error):
        return frozenset()
    urls = [config[s].get("url", "") for s in config.sections() if s.startswith("remote ")]
    return frozenset(name for url in urls if (name := owner_name(url)))


def _names(roots: Sequence[Path]) -> list[str]:
    """Each repository's name: its folder's name, made unique with the parent's when two share one."""
    names = [root.name or str(root) for root in roots]
    for i, root in enumerate(roots):
        if names.count(names[i]) > 1:
            names[i] = f"{root.parent.name}/{root.name}"
    for i, name in enumerate(list(names)):
        if names.count(name) > 1:
            names[i] = f"{name}#{names[:i].count(name) + 1}"
    return names


class ServedRepos:
    """The indexes of the served repositories, refreshed on request at most once per ``refresh_s``."""

    def __init__(
        self, roots: Sequence[Path], *, refresh_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        resolved = []
        for root in roots:
            path = Path(root).expanduser()
            if not path.is_dir():
                raise InputError(f"--repo {root}: not a folder")
            resolved.append(path.resolve())
        self.repos = [
            ServedRepo(name, root, remotes=git_remotes(root))
            for name, root in zip(_names(resolved), resolved)
        ]
        self.refresh_s, self.clock = refresh_s, clock
        self._lock = threading.Lock()
        self._scanned = -float("inf")
        self.scans = 0
        self.refresh(force=True)

    def due(self) -> bool:
        """Whether the last scan is older than ``refresh_s``."""
        return self.clock() - self._scanned >= self.refresh_s

    def refresh(self, *, force: bool = False) -> list[str]:
        """Scan for changed files (unless the last scan is younger than ``refresh_s``); names of the
        repositories indexed again. A repository another thread is indexing now is skipped: its old
        index serves until that refresh is done."""
        with self._lock:  # only the rate limit: indexing happens outside it
            now = self.clock()
            if not force and now - self._scanned < self.refresh_s:
                return []
            self._scanned = now
            self.scans += 1
        changed = []
        for repo in self.repos:
            if not repo.building.acquire(blocking=False):
                continue
            try:
                stamps, skipped = _source_files(repo.root)
                if stamps != repo.stamps or repo.index is None:
                    started = time.perf_counter()
                    repo.load(stamps, skipped)
                    changed.append(repo.name)
                    logger.info(
                        "indexed %s: %d files in %.0f ms",
                        repo.name,
                        len(repo.stamps),
                        1000 * (time.perf_counter() - started),
                    )
            finally:
                repo.building.release()
        return changed

    async def refreshed(self) -> list[str]:
        """:meth:`refresh` in a worker thread, so that the event loop keeps answering other requests."""
        if not self.due():
            return []
        return await asyncio.to_thread(self.refresh)

    # -- which repository, which file ---------------------------------------------------------------
    def _by_name(self, name: str | None) -> ServedRepo | None:
        """The repository a name or URL stands for: a git remote's owner/name, else the folder's name."""
        if not name:
            return None
        full = owner_name(name) or owner_name(f"/{name.strip()}")
        if full is not None:
            matching = [repo for repo in self.repos if full in repo.remotes]
            matching = matching or [repo for repo in self.repos if repo.name.lower() == full]
            if len(matching) == 1:
                return matching[0]
        wanted = name.rstrip("/").removesuffix(".git").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        for repo in self.repos:
            if wanted in (repo.name, repo.name.rsplit("/", 1)[-1], repo.root.name):
                return repo
        return None

    def _overlap(self, repos: Sequence[ServedRepo], near: frozenset[str]) -> tuple[ServedRepo, str] | None:
        """The file (of ``repos``) sharing most lines with the cursor's text; at least two lines."""
        best, score = None, 1
        for repo in repos:
            for path, lines in repo.lines.items():
                common = len(near & lines)
                if common > score:
                    best, score = (repo, path), common
        return best

    def locate(
        self,
        filepath: str | None,
        prefix: str = "",
        suffix: str = "",
        *,
        repo: str | None = None,
        hints: Sequence[str] = (),
    ) -> tuple[ServedRepo, str] | None:
        """The repository a cursor is in and its file's path there ("" when no file is known), or None."""
        near = _lines("\n".join(prefix.split("\n")[-30:] + suffix.split("\n")[:10]))
        named = self._by_name(repo)
        path = (filepath or "").removeprefix("file://")
        if path and Path(path).is_absolute():
            for candidate in self.repos if named is None else [named]:
                try:
                    return candidate, Path(path).resolve().relative_to(candidate.root).as_posix()
                except ValueError:
                    continue
            return None  # a file outside every served repository (a dependency): no context
        path = PurePosixPath(path.replace("\\", "/")).as_posix() if path else ""
        path = path.removeprefix("./")
        if named is not None:
            return named, path
        if path:
            having = [r for r in self.repos if r.index is not None and path in r.index.files]
            if len(having) == 1:
                return having[0], path
            if len(having) > 1:  # the same path in several: the copy closest to the editor's text
                return max(
                    having, key=lambda r: (len(near & r.lines.get(path, frozenset())), -having.index(r))
                ), path
            for candidate in self.repos:  # "repo/path/in/repo"
                head = f"{candidate.name}/"
                if path.startswith(head):
                    return candidate, path[len(head) :]
            folder = str(PurePosixPath(path).parent)
            if folder != ".":  # a new file in a folder only one repository has
                owners = [r for r in self.repos if (r.root / folder).is_dir()]
                if len(owners) == 1:
                    return owners[0], path
        votes = [r for r in self.repos for hint in hints if r.index is not None and hint in r.index.files]
        if votes:
            chosen = max(self.repos, key=lambda r: (votes.count(r), -self.repos.index(r)))
            found = self._overlap([chosen], near)
            return chosen, path or (found[1] if found else "")
        found = self._overlap(self.repos, near)
        if found is not None:
            return found[0], path or found[1]
        if len(self.repos) == 1:
            return self.repos[0], path
        return None

    def context(
        self,
        filepath: str | None,
        prefix: str,
        suffix: str,
        *,
        count_tokens: Callable[[str], int],
        options: ContextOptions,
        client_snippets: Sequence[Snippet] = (),
        repo: str | None = None,
        hints: Sequence[str] = (),
    ) -> tuple[list[Snippet], str, str]:
        """(snippets, target path, repository name) for a cursor: the editor's snippets first, then
        what the target's repository gives, within the budget. The server calls :meth:`refreshed`
        before; this reads the indexes as they are."""
        where = self.locate(filepath, prefix, suffix, repo=repo, hints=hints)
        if where is None:
            snippets = build_context(
                None, filepath or "", prefix, suffix, count_tokens=count_tokens, options=options,
                client_snippets=client_snippets,
            )  # fmt: skip
            return snippets, filepath or "", ""
        served, target = where
        snippets = build_context(
            served.index, target, prefix, suffix, count_tokens=count_tokens, options=options,
            client_snippets=client_snippets,
        )  # fmt: skip
        return snippets, target, served.name


@dataclass
class EditorContext:
    """What an editor protocol tells of a cursor's file and repository, beside its prompt."""

    snippets: list[Snippet] = field(default_factory=list)  # sent by the editor (source "client")
    filepath: str | None = None  # the file being completed
    repo: str | None = None  # a repository name or URL (Tabby's git_url, Copilot's nwo)
    hints: list[str] = field(default_factory=list)  # files the editor's snippets come from
    retrieve: bool = True  # False: no context at all (Tabby's disable_retrieval_augmented_code_completion)


def client_snippet(path: str, text: str, score: float | None = None) -> Snippet:
    """A snippet the editor sent (with the editor's score of it, when it gives one)."""
    return Snippet(path.removeprefix("file://"), text, "client", score)
