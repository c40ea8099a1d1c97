"""GitHub search: the most-starred repositories of the language, each cloned like a git URL."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from codetune.collect.sources import register_source
from codetune.errors import InputError

log = logging.getLogger(__name__)


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
                "html_url": item.get("html_url"),
            }
            for item in items
        )
        if not items or len(repos) >= body.get("total_count", 0) or page * 100 >= 1000:
            break
        page += 1
    return repos[: cfg.max_repos]


def result_name(repo: dict[str, Any]) -> str:
    """host/owner/name of a search result (the host of its web page; github.com when absent)."""
    host = urllib.parse.urlparse(repo.get("html_url") or "").hostname or "github.com"
    return f"{host}/{repo['full_name']}"


@register_source("github")
def resolve_github(text: str, cfg: Any, work: Path) -> list[Any]:
    from codetune.collect.sources.git import git_source
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
    return [git_source(repo["clone_url"], cfg, result_name(repo), github=query) for repo in repos]
