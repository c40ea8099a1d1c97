"""Documentation sites: crawl one host politely, extract each code block with the heading and prose
before it (``docs`` records), and round-trip them through doccano's JSONL for human annotation."""

from __future__ import annotations

import codecs
import functools
import http.client
import io
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import urllib.robotparser
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from codetune.errors import InputError
from codetune.files import atomic_write_text, read_json, write_json

log = logging.getLogger(__name__)
USER_AGENT = "codetune"
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
PROSE_TAGS = {"p", "li", "dd", "blockquote"}
MAX_PROSE = 2000


class _PageParser(HTMLParser):
    """Collect links and (heading, prose, code) blocks in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.blocks: list[dict[str, str]] = []
        self.heading = ""
        self.prose: list[str] = []
        self._capture: str | None = None  # "heading" | "prose" | "code"
        self._buffer: list[str] = []
        self._pre_depth = 0
        self._lang = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "a" and attr.get("href"):
            self.links.append(attr["href"] or "")
        if tag == "pre":
            self._pre_depth += 1
            if self._pre_depth == 1:
                self._start("code")
                self._lang = _lang_of(attr.get("class"))
        elif tag == "code" and self._pre_depth:
            self._lang = self._lang or _lang_of(attr.get("class"))
        elif self._pre_depth:
            return
        elif tag in HEADINGS:
            self._start("heading")
        elif tag in PROSE_TAGS and self._capture is None:
            self._start("prose")

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre" and self._pre_depth:
            self._pre_depth -= 1
            if self._pre_depth == 0:
                code = "".join(self._buffer).strip("\n")
                if code.strip():
                    prose = "\n".join(self.prose).strip()[-MAX_PROSE:]
                    self.blocks.append(
                        {"heading": self.heading, "prose": prose, "code": code, "lang": self._lang}
                    )
                self._capture, self._buffer = None, []
        elif tag in HEADINGS and self._capture == "heading":
            self.heading = " ".join("".join(self._buffer).split())
            self.prose = []
            self._capture, self._buffer = None, []
        elif tag in PROSE_TAGS and self._capture == "prose":
            text = " ".join("".join(self._buffer).split())
            if text:
                self.prose.append(text)
            self._capture, self._buffer = None, []

    def handle_data(self, data: str) -> None:
        if self._capture is not None:
            self._buffer.append(data)

    def _start(self, what: str) -> None:
        self._capture, self._buffer = what, []


def _lang_of(classes: str | None) -> str:
    for name in (classes or "").split():
        for prefix in ("language-", "lang-", "highlight-"):
            if name.startswith(prefix):
                return name[len(prefix) :]
    return ""


def extract_blocks(html: str) -> tuple[list[dict[str, str]], list[str]]:
    """(code blocks with heading and prose before them, raw links) of one HTML page."""
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser.blocks, parser.links


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects within the crawled host only: a crawl never leaves the site it was given."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        target = urllib.parse.urlparse(urllib.parse.urljoin(req.full_url, newurl))
        if target.scheme not in ("http", "https") or target.netloc != self.host:
            raise urllib.error.URLError(f"redirect to another host not followed: {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


# However slowly a server sends, one page (headers, body and redirects) gets this long in all; each
# read also waits at most READ_TIMEOUT_S.
PAGE_DEADLINE_S = 60.0
READ_TIMEOUT_S = 30.0
MAX_PAGE_BYTES = 5_000_000


class _DeadlineReader(io.RawIOBase):
    """A response's socket reader whose every read waits only for what is left of the page's time."""

    def __init__(self, raw: Any, sock: Any, deadline: float) -> None:
        super().__init__()
        self.raw, self.sock, self.deadline = raw, sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left > 0:
            self.sock.settimeout(min(left, READ_TIMEOUT_S))
            try:
                return self.raw.readinto(buffer)
            except TimeoutError:
                if time.monotonic() < self.deadline:
                    raise
        raise TimeoutError(f"the page took more than {PAGE_DEADLINE_S:g} s in all")

    def close(self) -> None:
        self.raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: Any, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, deadline))


def _deadline_handlers(deadline: float) -> list[Any]:
    """urllib's HTTP and HTTPS handlers, with each response read under ``deadline`` (a monotonic time)."""

    def connection(kind: type[http.client.HTTPConnection]) -> Callable[..., Any]:
        def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            made = kind(host, **kwargs)
            made.response_class = functools.partial(_DeadlineResponse, deadline=deadline)  # type: ignore[assignment]
            return made

        return make

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(connection(http.client.HTTPConnection), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(connection(http.client.HTTPSConnection), req, context=self._context)

    return [Http(), Https()]


def decode_page(body: bytes, declared: str | None) -> str:
    """A page's text: by its byte-order mark, else the charset the server declares, else a ``<meta>``
    charset, when Python knows them; else UTF-8 when the bytes are UTF-8, else windows-1252 (what
    browsers assume). A bogus charset (``x-bogus-charset``) is never fatal."""
    for mark, codec in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if body.startswith(mark):
            return body.decode(codec, errors="replace")
    meta = re.search(rb"""<meta[^>]*charset\s*=\s*["']?([\w.:-]+)""", body[:4096], re.IGNORECASE)
    for label in (declared, meta.group(1).decode("ascii") if meta else None):
        if label:
            try:
                return body.decode(label, errors="replace")
            except LookupError:  # unknown, or not a text encoding (rot13, zlib)
                continue
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace")


def _fetch(url: str, host: str | None = None) -> tuple[str, str]:
    """(content type, text) of ``url``, within PAGE_DEADLINE_S however slowly the server sends;
    redirects are followed only while they stay on ``host``."""
    deadline = time.monotonic() + PAGE_DEADLINE_S
    opener = urllib.request.build_opener(
        _SameHostRedirects(host or urllib.parse.urlparse(url).netloc), *_deadline_handlers(deadline)
    )
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with opener.open(request, timeout=min(READ_TIMEOUT_S, PAGE_DEADLINE_S)) as response:
        kind = response.headers.get("Content-Type", "")
        body = response.read(MAX_PAGE_BYTES)
        return kind, decode_page(body, response.headers.get_content_charset())


def _robots(start: str) -> urllib.robotparser.RobotFileParser:
    parts = urllib.parse.urlparse(start)
    robots = urllib.robotparser.RobotFileParser(f"{parts.scheme}://{parts.netloc}/robots.txt")
    try:
        _, text = _fetch(robots.url)
        robots.parse(text.splitlines())
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException):
        robots.parse([])  # no robots.txt: everything allowed
    return robots


def crawl(start: str, cfg: Any, state_path: Path) -> list[dict[str, Any]]:
    """Breadth-first crawl of ``start``'s host; returns code-block records. Resumable via ``state_path``."""
    host = urllib.parse.urlparse(start).netloc
    state: dict[str, Any] = {"queue": [[start, 0]], "visited": [], "records": [], "done": False}
    if state_path.is_file():
        state = read_json(state_path)
        if state.get("done"):
            return state["records"]
        log.info("resuming crawl of %s (%d pages done)", start, len(state["visited"]))
    robots = _robots(start)
    visited = set(state["visited"])
    queued = {url for url, _ in state["queue"]} | visited
    pages_ok = 0
    while state["queue"] and len(state["visited"]) < cfg.docs_max_pages:
        url, depth = state["queue"].pop(0)
        if url in visited:
            continue
        visited.add(url)
        state["visited"].append(url)
        if not robots.can_fetch(USER_AGENT, url):
            log.info("robots.txt disallows %s", url)
            continue
        if pages_ok:
            time.sleep(cfg.docs_delay)
        try:
            kind, html = _fetch(url, host)
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as error:
            log.warning("skipping %s: %s", url, error)
            continue
        pages_ok += 1
        if "html" not in kind.lower():
            continue
        blocks, links = extract_blocks(html)
        for index, block in enumerate(blocks):
            state["records"].append({"url": f"{url}#block-{index}", **block})
        if depth < cfg.docs_max_depth:
            for link in links:
                absolute = urllib.parse.urldefrag(urllib.parse.urljoin(url, link))[0]
                parts = urllib.parse.urlparse(absolute)
                if parts.scheme in ("http", "https") and parts.netloc == host and absolute not in queued:
                    queued.add(absolute)
                    state["queue"].append([absolute, depth + 1])
        write_json(state_path, state)
    if not pages_ok and not state["records"]:
        raise InputError(f"could not fetch any page of {start}")
    state["done"] = True
    write_json(state_path, state)
    return state["records"]


def process_docs(blocks: list[dict[str, Any]], repo: str, ctx: Any) -> list[dict[str, Any]]:
    """Turn crawled blocks into corpus records (kind ``docs``): redacted, hashed; no code filters."""
    import hashlib

    from codetune.collect.dedup import exact_key, minhash_values
    from codetune.collect.secrets import redact

    records = []
    for block in blocks:
        code, counts = redact(block["code"]) if ctx.redact else (block["code"], {})
        prose, prose_counts = redact(block["prose"]) if ctx.redact else (block["prose"], {})
        for kind, n in prose_counts.items():
            counts[kind] = counts.get(kind, 0) + n
        raw = len(block["code"].encode("utf-8"))
        record: dict[str, Any] = {
            "path": block["url"],
            "repo": repo,
            "content": code,
            "kind": "docs",
            "heading": block["heading"],
            "prose": prose,
            "url": block["url"],
            "bytes": len(code.encode("utf-8")),
            "orig_bytes": raw,
            "lines": code.count("\n") + 1,
            "sha256": hashlib.sha256(code.encode("utf-8")).hexdigest(),
            "licence_stripped": False,
            "redactions": counts,
            "status": None if code.strip() else "empty",
        }
        if ctx.exact_dedup:
            record["exact"] = exact_key(code)
        if ctx.near_dedup:
            record["minhash"] = minhash_values(code, ctx.num_perm, ctx.ngram).tobytes()
        records.append(record)
    return records


def export_doccano(corpus: str | Path, path: str | Path) -> int:
    """Write the corpus's ``docs`` records as doccano seq2seq JSONL (label = the instruction to write)."""
    from codetune.artifacts import read_corpus

    lines = []
    for row in read_corpus(corpus):
        if row.get("kind") != "docs":
            continue
        text = "\n\n".join(part for part in (row["heading"], row["prose"], row["content"]) if part)
        meta = {
            "url": row["url"],
            "heading": row["heading"],
            "prose": row["prose"],
            "code": row["content"],
            "sha256": row["sha256"],
        }
        lines.append(json.dumps({"text": text, "label": [], "meta": meta}, ensure_ascii=False))
    if not lines:
        raise InputError(f"no docs records in {corpus}: collect a docs:URL source first")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return len(lines)


def import_doccano(path: str | Path, out: str | Path) -> int:
    """Read doccano's annotated export back; write instruction pairs (JSONL) for rows with a label."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"doccano export not found: {path}")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}:{number}: not JSON") from None
        meta = row.get("meta") if isinstance(row.get("meta"), dict) else row  # doccano may flatten meta
        label = row.get("label") or row.get("labels") or []
        if isinstance(label, str):
            label = [label]
        label = [item if isinstance(item, str) else str(item[-1]) for item in label]
        code = meta.get("code")
        if not label or not code:
            continue
        pairs.append(
            {
                "instruction": label[0].strip(),
                "output": code,  # the field `build --format instruct` reads by default
                "heading": meta.get("heading", ""),
                "prose": meta.get("prose", ""),
                "url": meta.get("url", ""),
            }
        )
    if not pairs:
        raise InputError(f"no annotated rows (with a label and code) in {path}")
    atomic_write_text(out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    return len(pairs)
