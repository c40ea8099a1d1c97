"""Sources: local folders, git repositories, GitHub search results and archives, each turned into a
local folder to walk. One registry maps a source string to its kind."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codetune.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class Source:
    """One unit of resumable work: a folder (possibly still to be fetched) whose files belong to ``repo``."""

    kind: str
    origin: str
    repo: str
    fetch: Callable[[], Path] = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.kind}\0{self.origin}\0{self.repo}".encode()).hexdigest()[:16]


def cache_root(cfg: Any) -> Path:
    """Where clones and unpacked archives live between runs."""
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("codetune")) / "collect"


# ---- Kinds ---------------------------------------------------------------------------------------

SourceResolver = Callable[[str, Any, Path], list[Source]]
SOURCE_KINDS: dict[str, SourceResolver] = {}


def register_source(name: str) -> Callable[[SourceResolver], SourceResolver]:
    """Register a resolver turning a source string into Sources."""

    def wrap(fn: SourceResolver) -> SourceResolver:
        SOURCE_KINDS[name] = fn
        return fn

    return wrap


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
    result: list[Source] = []
    for text in cfg.sources:
        result.extend(SOURCE_KINDS[source_kind(text)](text, cfg, work))
    return result


@register_source("local")
def _local(text: str, cfg: Any, work: Path) -> list[Source]:
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"source not found: {text}")
    if not path.is_dir():
        raise InputError(f"source is not a folder, archive or git repository: {text}")
    root = path.resolve()
    return [Source("local", str(root), root.name, lambda: root)]


def repo_name(url: str) -> str:
    """owner/name for hosted URLs, the folder name otherwise."""
    parsed = urllib.parse.urlparse(url if "://" in url else "ssh://" + url.replace(":", "/", 1))
    parts = [p for p in parsed.path.split("/") if p]
    name = (
        "/".join(parts[-2:])
        if parsed.scheme in ("http", "https", "ssh", "git") and len(parts) >= 2
        else parts[-1]
    )
    return name.removesuffix(".git")


def git_clone(url: str, cache: Path, branch: str | None = None) -> Path:
    """Shallow-clone ``url`` (at ``branch``/tag) into the cache, reusing an earlier clone."""
    if shutil.which("git") is None:
        raise InputError("git is not installed; it is needed for git sources")
    key = hashlib.sha256(f"{url}\0{branch or ''}".encode()).hexdigest()[:16]
    target = cache / "git" / f"{repo_name(url).replace('/', '__')}-{key}"
    if (target / ".git").is_dir():
        log.info("reusing clone of %s in %s", url, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=target.parent))
    cmd = ["git", "clone", "--depth", "1", "--quiet"]
    if branch:
        cmd += ["--branch", branch]
    cmd += [url, str(tmp / "repo")]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        if proc.returncode != 0:
            message = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise InputError(f"git clone of {url} failed: {message}")
        os.replace(tmp / "repo", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@register_source("git")
def _git(text: str, cfg: Any, work: Path) -> list[Source]:
    cache = cache_root(cfg)
    return [
        Source(
            "git", text, repo_name(text), lambda: git_clone(text, cache, cfg.branch), {"branch": cfg.branch}
        )
    ]


def _safe_members_tar(archive: tarfile.TarFile, dest: Path, skipped: Counter[str]) -> list[tarfile.TarInfo]:
    members = []
    for member in archive.getmembers():
        target = (dest / member.name).resolve()
        if member.name.startswith("/") or ".." in Path(member.name).parts or not target.is_relative_to(dest):
            skipped["unsafe_path"] += 1
            continue
        if member.issym() or member.islnk() or member.isdev():
            skipped["unsafe_path"] += 1  # links could point outside; devices are never source code
            continue
        members.append(member)
    return members


def unpack_archive(path: Path, cache: Path) -> tuple[Path, Counter[str]]:
    """Unpack a .zip/.tar.* into the cache (once), skipping members that would escape the folder."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    target = cache / "archives" / f"{path.name}-{digest.hexdigest()[:16]}"
    skipped: Counter[str] = Counter()
    marker = target / ".codetune-skipped.json"
    if marker.is_file():
        return target, Counter(json.loads(marker.read_text()))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent)).resolve()
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    dest = (tmp / info.filename).resolve()
                    if (
                        info.filename.startswith("/")
                        or ".." in Path(info.filename).parts
                        or not dest.is_relative_to(tmp)
                    ):
                        skipped["unsafe_path"] += 1
                        continue
                    archive.extract(info, tmp)
        else:
            with tarfile.open(path) as archive:
                members = _safe_members_tar(archive, tmp, skipped)
                archive.extractall(tmp, members=members, filter="data")
        (tmp / ".codetune-skipped.json").write_text(json.dumps(dict(skipped)))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"cannot unpack archive {path}: {error}") from None
    return target, skipped


@register_source("archive")
def _archive(text: str, cfg: Any, work: Path) -> list[Source]:
    path = Path(text).expanduser()
    if not path.is_file():
        raise InputError(f"source not found: {text}")
    cache = cache_root(cfg)
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    source = Source("archive", str(path.resolve()), name, lambda: Path())

    def fetch() -> Path:
        root, skipped = unpack_archive(path, cache)
        source.extra["skipped"] = dict(skipped)
        return root

    source.fetch = fetch
    return [source]


# ---- GitHub search -------------------------------------------------------------------------------


def _wait(seconds: float, why: str, cfg: Any) -> None:
    seconds = max(0.0, min(seconds, cfg.max_wait))
    log.warning("GitHub %s: waiting %.0fs", why, seconds)
    from rich.console import Console

    Console(stderr=True).print(f"GitHub {why}: waiting {seconds:.0f}s ...", highlight=False)
    time.sleep(seconds)


def github_get(url: str, cfg: Any, attempts: int = 5) -> Any:
    """GET a GitHub API URL as JSON, waiting out rate limits (Retry-After, X-RateLimit-Reset)."""
    headers = {"Accept": "application/vnd.github+json", "User-Agent": "codetune"}
    token = os.environ.get("GITHUB_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for _ in range(attempts):
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = json.loads(response.read().decode("utf-8"))
                remaining = response.headers.get("X-RateLimit-Remaining")
                reset = response.headers.get("X-RateLimit-Reset")
                if remaining is not None and int(remaining) <= 0 and reset:
                    _wait(float(reset) - time.time() + 1, "rate limit reached", cfg)
                return body
        except urllib.error.HTTPError as error:
            if error.code in (403, 429):
                retry = error.headers.get("Retry-After")
                reset = error.headers.get("X-RateLimit-Reset")
                if retry is not None:
                    _wait(float(retry), f"rate limit ({error.code})", cfg)
                    continue
                if error.headers.get("X-RateLimit-Remaining") == "0" and reset:
                    _wait(float(reset) - time.time() + 1, f"rate limit ({error.code})", cfg)
                    continue
            raise InputError(f"GitHub API error {error.code} for {url}: {error.reason}") from None
        except urllib.error.URLError as error:
            raise InputError(f"cannot reach the GitHub API at {url}: {error.reason}") from None
    raise InputError(f"GitHub API still rate-limited after {attempts} attempts: {url}")


def github_search(query: str, language: str, cfg: Any) -> list[dict[str, Any]]:
    """Repositories matching ``language:LANG QUERY``, most stars first, at most ``cfg.max_repos``."""
    base = os.environ.get("GITHUB_API_URL", cfg.github_api).rstrip("/")
    q = f"language:{language} {query}".strip()
    repos: list[dict[str, Any]] = []
    page = 1
    while len(repos) < cfg.max_repos:
        params = urllib.parse.urlencode(
            {"q": q, "sort": "stars", "order": "desc", "per_page": 100, "page": page}
        )
        body = github_get(f"{base}/search/repositories?{params}", cfg)
        items = body.get("items") or []
        repos.extend(
            {
                "full_name": item["full_name"],
                "clone_url": item["clone_url"],
                "default_branch": item.get("default_branch"),
            }
            for item in items
        )
        if not items or len(repos) >= body.get("total_count", 0) or page * 100 >= 1000:
            break
        page += 1
    return repos[: cfg.max_repos]


@register_source("github")
def _github(text: str, cfg: Any, work: Path) -> list[Source]:
    from codetune.languages import get_language

    query = text.removeprefix("github:").strip()
    language = get_language(cfg.language).name
    state = (
        work / f"github-{hashlib.sha256(f'{query}{language}{cfg.max_repos}'.encode()).hexdigest()[:12]}.json"
    )
    if state.is_file():  # resumable: do not search again
        repos = json.loads(state.read_text())
    else:
        repos = github_search(query, language, cfg)
        from codetune.files import write_json

        write_json(state, repos)
    cache = cache_root(cfg)
    return [
        Source(
            "git",
            repo["clone_url"],
            repo["full_name"],
            lambda url=repo["clone_url"]: git_clone(url, cache, cfg.branch),
            {"github": query},
        )
        for repo in repos
    ]


@register_source("docs")
def _docs(text: str, cfg: Any, work: Path) -> list[Source]:
    url = text.removeprefix("docs:").strip()
    if not url.startswith(("http://", "https://")):
        raise InputError(f"docs source must be docs:http(s)://...: {text}")
    return [Source("docs", url, urllib.parse.urlparse(url).netloc, lambda: work)]
