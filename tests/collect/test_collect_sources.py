"""Remote and packed sources, all local: git over file://, archives, a fake GitHub API and a docs site
served on 127.0.0.1."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from test_collect_pipeline import distinct_module, write
from tests.conftest import run_cli

from codetune.collect.config import CollectConfig
from codetune.collect.docs import export_doccano, import_doccano
from codetune.collect.pipeline import collect, read_corpus
from codetune.errors import InputError


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
            "HOME": str(cwd),
            "PATH": "/usr/bin:/bin",
        },
    )


def make_repo(root: Path, files: dict[str, str], tag_files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=root)
    if tag_files:
        for rel, text in tag_files.items():
            write(root, rel, text)
        git("add", "-A", cwd=root)
        git("commit", "-q", "-m", "old", cwd=root)
        git("tag", "v1", cwd=root)
    for rel, text in files.items():
        write(root, rel, text)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "new", cwd=root)
    return root


def test_git_file_url_branch_tag_and_cache(tmp_path):
    repo = make_repo(
        tmp_path / "origin" / "demo",
        {"src/new.py": distinct_module(2)},
        tag_files={"src/old.py": distinct_module(1)},
    )
    url = f"file://{repo}"
    cache = tmp_path / "cache"
    head = collect(CollectConfig(sources=[url], out=tmp_path / "c1", cache_dir=cache))
    assert sorted(r["path"] for r in read_corpus(head.out)) == ["src/new.py", "src/old.py"]
    assert {r["repo"] for r in read_corpus(head.out)} == {str(repo)}  # the path: unique and stable
    clones = list((cache / "git").iterdir())
    assert len(clones) == 1
    # Shallow: one commit only.
    count = subprocess.run(
        ["git", "rev-list", "--count", "HEAD"], cwd=clones[0], capture_output=True, text=True
    )
    assert count.stdout.strip() == "1"
    tagged = collect(CollectConfig(sources=[url], out=tmp_path / "c2", cache_dir=cache, branch="v1"))
    assert [r["path"] for r in read_corpus(tagged.out)] == ["src/old.py"]
    # The clone is reused: remove the origin and collect again.
    subprocess.run(["rm", "-rf", str(repo)], check=True)
    again = collect(CollectConfig(sources=[url], out=tmp_path / "c3", cache_dir=cache))
    assert again.summary["files kept"] == 2


def test_git_bad_url_is_clear(tmp_path):
    with pytest.raises(InputError, match=r"git clone of file://.* failed"):
        collect(
            CollectConfig(
                sources=[f"file://{tmp_path}/missing.git"], out=tmp_path / "c", cache_dir=tmp_path / "cache"
            )
        )


def test_archives_unpack_safely(tmp_path):
    zip_path = tmp_path / "code.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("pkg/a.py", distinct_module(1))
        archive.writestr("../evil.py", distinct_module(2))
    tar_path = tmp_path / "code.tar.gz"
    payload = tmp_path / "payload.py"
    payload.write_text(distinct_module(3))
    with tarfile.open(tar_path, "w:gz") as archive:
        archive.add(payload, arcname="lib/b.py")
        for i, name in enumerate(("/etc/abs.py", "lib/../../up.py")):
            data = distinct_module(20 + i).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("lib/link.py")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    result = collect(
        CollectConfig(
            sources=[str(zip_path), str(tar_path)], out=tmp_path / "c", cache_dir=tmp_path / "cache"
        )
    )
    rows = read_corpus(result.out)
    assert sorted((r["repo"], r["path"]) for r in rows) == [
        (str(tar_path), "lib/b.py"),
        (str(zip_path), "pkg/a.py"),
    ]
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["counts"]["dropped"]["unsafe_path"]["files"] == 3
    assert manifest["counts"]["dropped"]["link_outside"]["files"] == 1
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "up.py").exists()
    with pytest.raises(InputError, match="cannot unpack archive"):
        bad = tmp_path / "bad.zip"
        bad.write_bytes(b"not a zip")
        collect(CollectConfig(sources=[str(bad)], out=tmp_path / "c2", cache_dir=tmp_path / "cache"))


class FakeGitHub(BaseHTTPRequestHandler):
    """Answers /search/repositories in GitHub's shape; the first call is rate-limited (403 + Retry-After)."""

    repos: ClassVar[list[dict]] = []
    calls: ClassVar[list[dict]] = []

    def do_GET(self):
        type(self).calls.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "t": time.time()}
        )
        if len(type(self).calls) == 1:
            body = json.dumps({"message": "API rate limit exceeded"}).encode()
            self.send_response(403)
            self.send_header("Retry-After", "1")
            self.send_header("X-RateLimit-Remaining", "0")
        else:
            body = json.dumps(
                {"total_count": len(self.repos), "incomplete_results": False, "items": self.repos}
            ).encode()
            self.send_response(200)
            self.send_header("X-RateLimit-Remaining", "9")
            self.send_header("X-RateLimit-Reset", str(int(time.time()) + 60))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(handler, directory: Path | None = None):
    if directory is not None:

        class Handler(handler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(directory), **kw)

            def log_message(self, *args):
                pass
    else:
        Handler = handler
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_github_search_rate_limit_max_repos_and_resume(tmp_path, monkeypatch):
    repos = []
    for i in range(3):
        path = make_repo(tmp_path / "remote" / f"repo{i}", {f"m{i}.py": distinct_module(i)})
        repos.append({"full_name": f"acme/repo{i}", "clone_url": f"file://{path}", "default_branch": "main"})
    FakeGitHub.repos, FakeGitHub.calls = repos, []
    server, base = serve(FakeGitHub)
    monkeypatch.setenv("GITHUB_TOKEN", "t0ken")
    monkeypatch.delenv("GITHUB_API_URL", raising=False)
    try:
        config = CollectConfig(
            sources=["github:stars:>10"],
            out=tmp_path / "c",
            github_api=base,
            max_repos=2,
            cache_dir=tmp_path / "cache",
        )
        start = time.time()
        result = collect(config)
        assert time.time() - start >= 1.0  # waited for Retry-After
    finally:
        server.shutdown()
    assert len(FakeGitHub.calls) == 2
    assert FakeGitHub.calls[1]["auth"] == "Bearer t0ken"
    assert "language%3Apython" in FakeGitHub.calls[1]["path"]
    rows = read_corpus(result.out)
    assert sorted((r["repo"], r["path"]) for r in rows) == [
        ("github.com/acme/repo0", "m0.py"),
        ("github.com/acme/repo1", "m1.py"),
    ]


def test_github_resume_skips_done_repositories(tmp_path, monkeypatch):
    from codetune.collect import pipeline, sources

    path = make_repo(tmp_path / "remote" / "one", {"a.py": distinct_module(1)})
    path2 = make_repo(tmp_path / "remote" / "two", {"b.py": distinct_module(2)})
    FakeGitHub.repos = [
        {"full_name": "acme/one", "clone_url": f"file://{path}"},
        {"full_name": "acme/two", "clone_url": f"file://{path2}"},
    ]
    FakeGitHub.calls = [{"warm": True}]  # no rate limit this time
    server, base = serve(FakeGitHub)
    real = pipeline._process_chunk
    seen: list[str] = []
    crash = [True]

    def flaky(chunk):
        seen.append(chunk[0][2])
        if chunk[0][2] == "github.com/acme/two" and crash:
            crash.pop()
            raise RuntimeError("killed")
        return real(chunk)

    monkeypatch.setattr(pipeline, "_process_chunk", flaky)
    config = CollectConfig(
        sources=["github:"], out=tmp_path / "c", github_api=base, cache_dir=tmp_path / "cache", workers=1
    )
    try:
        with pytest.raises(RuntimeError):
            collect(config)
        calls_before = len(FakeGitHub.calls)
        seen.clear()
        result = collect(config)
    finally:
        server.shutdown()
    assert len(FakeGitHub.calls) == calls_before  # the search was not repeated
    assert seen == ["github.com/acme/two"]  # the finished repository was skipped
    assert result.summary["files kept"] == 2
    assert sources.SOURCE_KINDS["github"]


SITE = {
    "robots.txt": "User-agent: *\nDisallow: /private/\n",
    "index.html": """<html><body><h1>AirScript guide</h1><p>Start here.</p>
<a href="/tables.html">Tables</a> <a href="/private/secret.html">x</a> <a href="http://example.org/">out</a>
<h2>Open a table</h2><p>Use <code>open</code> to open a table by name.</p>
<pre><code class="language-airscript">let t = Table.open("orders")
t.count()</code></pre></body></html>""",
    "tables.html": """<html><body><h2>Filter rows</h2><p>Filter rows with a predicate.</p>
<pre>t.filter(r => r.total > 100)</pre><a href="/deep.html">deeper</a></body></html>""",
    "deep.html": "<html><body><h2>Deep</h2><pre>t.deep()</pre></body></html>",
    "private/secret.html": "<html><body><h2>Secret</h2><pre>t.secret()</pre></body></html>",
}


def crawl_site(tmp_path, **limits):
    """Serve SITE on 127.0.0.1 and collect it as a docs source; the server is stopped after."""
    site = tmp_path / "site"
    for rel, text in SITE.items():
        write(site, rel, text)
    server, base = serve(SimpleHTTPRequestHandler, site)
    try:
        config = CollectConfig(
            sources=[f"docs:{base}/index.html"],
            out=tmp_path / "c",
            language="javascript",
            docs_delay=0,
            **limits,
        )
        return collect(config), config
    finally:
        server.shutdown()


def test_docs_site_crawl_and_doccano_round_trip(tmp_path):
    result, _ = crawl_site(tmp_path, docs_max_depth=1)
    rows = read_corpus(result.out)
    by_code = {r["content"]: r for r in rows}
    assert set(by_code) == {'let t = Table.open("orders")\nt.count()', "t.filter(r => r.total > 100)"}
    first = by_code['let t = Table.open("orders")\nt.count()']
    assert first["kind"] == "docs" and first["heading"] == "Open a table"
    assert first["prose"] == "Use open to open a table by name."
    assert first["url"].startswith("http://127.0.0.1:") and "/index.html" in first["url"]
    export = tmp_path / "doccano.jsonl"
    assert export_doccano(result.out, export) == 2
    cli_export = tmp_path / "cli-doccano.jsonl"
    proc = run_cli("doccano", "export", str(result.out), "--out", str(cli_export))
    assert proc.returncode == 0 and cli_export.read_text() == export.read_text(), proc.stderr
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    lines[0]["label"] = ["Open the orders table and count its rows."]
    meta = lines[1].pop("meta")
    lines[1].update(meta)  # doccano may flatten meta into the row
    lines[1]["label"] = []  # not annotated: skipped
    export.write_text("".join(json.dumps(line) + "\n" for line in lines))
    pairs_path = tmp_path / "pairs.jsonl"
    assert import_doccano(export, pairs_path) == 1
    pair = json.loads(pairs_path.read_text())
    assert pair["instruction"] == "Open the orders table and count its rows."
    assert pair["output"] == lines[0]["meta"]["code"]
    proc = run_cli("doccano", "import", str(export), "--out", str(tmp_path / "cli-pairs.jsonl"))
    assert proc.returncode == 0 and (tmp_path / "cli-pairs.jsonl").read_text() == pairs_path.read_text()
    missing = run_cli("doccano", "import", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x.jsonl"))
    assert missing.returncode != 0 and "doccano export not found" in missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "x.jsonl").exists()


def test_docs_crawl_resumes_and_respects_page_limit(tmp_path):
    result, config = crawl_site(tmp_path, docs_max_pages=1)
    assert [r["heading"] for r in read_corpus(result.out)] == ["Open a table"]
    # A finished crawl state is reused without any server.
    from codetune.collect.docs import crawl

    state = tmp_path / "state.json"
    state.write_text(
        json.dumps(
            {
                "queue": [],
                "visited": ["x"],
                "done": True,
                "records": [{"url": "u", "heading": "h", "prose": "p", "code": "c", "lang": ""}],
            }
        )
    )
    assert crawl("http://127.0.0.1:9/", config, state)[0]["code"] == "c"


class ExhaustedGitHub(BaseHTTPRequestHandler):
    """A 200 answer that says the quota is used up until one second from now."""

    def do_GET(self):
        body = json.dumps({"total_count": 0, "items": []}).encode()
        self.send_response(200)
        self.send_header("X-RateLimit-Remaining", "0")
        self.send_header("X-RateLimit-Reset", str(int(time.time()) + 1))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_github_waits_for_rate_limit_reset_and_reports_errors(tmp_path, capsys):
    from codetune.collect.sources.github import github_get

    server, base = serve(ExhaustedGitHub)
    try:
        start = time.time()
        assert github_get(f"{base}/search/repositories?q=x", CollectConfig(max_wait=5)) == {
            "total_count": 0,
            "items": [],
        }
        assert time.time() - start >= 0.5
    finally:
        server.shutdown()
    assert "waiting" in capsys.readouterr().err
    with pytest.raises(InputError, match="cannot reach the GitHub API"):
        github_get("http://127.0.0.1:9/search/repositories", CollectConfig())
