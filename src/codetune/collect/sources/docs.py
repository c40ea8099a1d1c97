"""A documentation site, crawled by :mod:`codetune.collect.docs` (its records need no folder)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from codetune.collect.sources import Source, register_source
from codetune.errors import InputError


@register_source("docs")
def resolve_docs(text: str, cfg: Any, work: Path) -> list[Source]:
    url = text.removeprefix("docs:").strip()
    if not url.startswith(("http://", "https://")):
        raise InputError(f"docs source must be docs:http(s)://...: {text}")
    return [Source("docs", url, urllib.parse.urlparse(url).netloc, lambda: work)]
