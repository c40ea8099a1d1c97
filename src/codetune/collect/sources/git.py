"""Git repositories: shallow clones kept in the cache and brought up to date on every run."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from codetune.collect.sources import Source, cache_root, register_source, repo_name
from codetune.collect.walk import SAFE_GIT
from codetune.errors import InputError

log = logging.getLogger(__name__)
# A stalled transfer (under 1 kB/s for a minute) fails instead of hanging the run.
_NETWORK = ("-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60")


def _env() -> dict[str, str]:
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0"}


def _git_output(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *SAFE_GIT, *args], cwd=cwd, capture_output=True, text=True, env=_env(), timeout=600
    )
    if proc.returncode != 0:
        raise InputError(f"git {args[0]} failed in {cwd}: {_last_line(proc.stderr)}")
    return proc.stdout.strip()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
    return lines[-1] if lines else "unknown error"


def run_with_progress(args: list[str], what: str, cwd: Path | None = None) -> tuple[int, str]:
    """Run a git transfer (clone/fetch with ``--progress``), showing git's progress on stderr.

    On a terminal the latest progress line is shown in a spinner; otherwise each finished phase
    ("Receiving objects: 100% ..., done.") is printed once. Returns (exit code, all of stderr).
    """
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)  # log lines are never wrapped
    proc = subprocess.Popen(
        ["git", *SAFE_GIT, *_NETWORK, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stderr is not None
    captured: list[str] = []
    pending = ""
    with console.status(what) if console.is_terminal else _nothing() as status:
        if not console.is_terminal:
            console.print(what)
        for block in iter(lambda: proc.stderr.read1(4096), b""):  # type: ignore[union-attr]
            pending += block.decode("utf-8", errors="replace")
            *lines, pending = re.split(r"(?<=[\r\n])", pending)
            for line in lines:
                text = line.strip()
                if not text:
                    continue
                captured.append(text)
                if status is not None:
                    status.update(f"{what}: {text}")
                elif line.endswith("\n"):
                    console.print(f"  {text}")
    if pending.strip():
        captured.append(pending.strip())
    return proc.wait(), "\n".join(captured)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def git_clone(url: str, cache: Path, branch: str | None = None) -> tuple[Path, str]:
    """A shallow clone of ``url`` (at ``branch`` or tag) in the cache, brought up to date with the
    source; returns (work tree, commit). When the source cannot be reached, an earlier clone is used."""
    if shutil.which("git") is None:
        raise InputError("git is not installed; it is needed for git sources")
    key = hashlib.sha256(f"{url}\0{branch or ''}".encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", repo_name(url)).strip("_")[-60:]
    target = cache / "git" / f"{slug}-{key}"
    if (target / ".git").is_dir():
        return target, _refresh(url, target, branch)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=target.parent))
    cmd = ["clone", "--depth", "1", "--progress"]
    if branch:
        cmd += ["--branch", branch]
    cmd += ["--", url, str(tmp / "repo")]
    try:
        code, stderr = run_with_progress(cmd, f"clone {url}")
        if code != 0:
            raise InputError(f"git clone of {url} failed: {_last_line(stderr)}")
        os.replace(tmp / "repo", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, _git_output(target, "rev-parse", "HEAD")


def _refresh(url: str, target: Path, branch: str | None) -> str:
    """Fetch the newest commit of the cached clone's ref and check it out; return the commit."""
    code, stderr = run_with_progress(
        ["fetch", "--depth", "1", "--progress", "origin", branch or "HEAD"], f"update {url}", cwd=target
    )
    if code != 0:
        commit = _git_output(target, "rev-parse", "HEAD")
        log.warning("cannot update %s (%s); using the cached clone at %s", url, _last_line(stderr), commit)
        return commit
    # Reset even when FETCH_HEAD equals HEAD: it also repairs a work tree left half-updated by a kill.
    _git_output(target, "reset", "--hard", "--quiet", "FETCH_HEAD")
    _git_output(target, "clean", "-ffdxq")
    return _git_output(target, "rev-parse", "HEAD")


def git_source(url: str, cfg: Any, name: str | None = None, **extra: Any) -> Source:
    """A Source that clones (or updates) ``url`` when fetched, recording the commit it saw."""
    cache = cache_root(cfg)
    source = Source("git", url, name or repo_name(url), lambda: Path(), {"branch": cfg.branch, **extra})

    def fetch() -> Path:
        root, commit = git_clone(url, cache, cfg.branch)
        source.extra["commit"] = commit
        return root

    source.fetch = fetch
    return source


@register_source("git")
def resolve_git(text: str, cfg: Any, work: Path) -> list[Source]:
    return [git_source(text, cfg)]
