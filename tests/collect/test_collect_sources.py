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
from tests.helpers.cli import assert_clean_error, run_cli
from tests.helpers.collect import distinct_module, write

from codetune.artifacts import read_corpus
from codetune.collect.config import CollectConfig
from codetune.collect.docs import export_doccano, import_doccano
from codetune.collect.pipeline import collect
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
    outside = host_dir(tmp_path)
    for i in range(3):
        path = make_repo(tmp_path / "remote" / f"repo{i}", {f"m{i}.py": distinct_module(i)})
        (path / "leak.py").symlink_to(outside / "secret.py")  # a found repository must not reach the host
        git("add", "-A", cwd=path)
        git("commit", "-q", "-m", "link", cwd=path)
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
    assert_no_secret(result)
    assert manifest_of(result)["counts"]["dropped"]["link_outside"]["files"] == 2
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


# ---- git work trees, clone cache, names ---------------------------------------------------------


def manifest_of(result) -> dict:
    return json.loads((result.out / "manifest.json").read_text())


def test_git_work_tree_collects_tracked_ignored_files_and_counts_skips(tmp_path):
    repo = make_repo(tmp_path / "app", {"src/main.py": distinct_module(1)})
    write(repo, ".gitignore", "tests/\ngen/\nnode_modules/\n")
    write(repo, "tests/test_main.py", distinct_module(2))  # ignored, but tracked (added with -f)
    write(repo, "node_modules/dep/index.py", distinct_module(3))  # tracked inside a skip_dirs folder
    git("add", ".gitignore", cwd=repo)
    git("add", "-f", "tests/test_main.py", "node_modules/dep/index.py", cwd=repo)
    git("commit", "-q", "-m", "tests", cwd=repo)
    write(repo, "gen/out.py", distinct_module(4))  # untracked and ignored
    write(repo, "gen/notes.txt", "not python\n")  # ignored, but not a candidate: not counted
    write(repo, "scratch.py", distinct_module(5))  # untracked, not ignored: collected
    result = collect(CollectConfig(sources=[str(repo)], out=tmp_path / "c"))
    assert sorted(r["path"] for r in read_corpus(result.out)) == [
        "scratch.py",
        "src/main.py",
        "tests/test_main.py",
    ]
    assert manifest_of(result)["counts"]["skipped"] == {"gitignored": 1, "skip_dirs": 1}
    assert result.summary["skipped: gitignored"] == "1 files"
    cloned = collect(
        CollectConfig(sources=[f"file://{repo}"], out=tmp_path / "c3", cache_dir=tmp_path / "cache")
    )
    assert sorted(r["path"] for r in read_corpus(cloned.out)) == ["src/main.py", "tests/test_main.py"]
    assert manifest_of(cloned)["counts"]["skipped"] == {"skip_dirs": 1}
    # A plain folder (no git) counts the same reasons while walking.
    plain = tmp_path / "plain"
    write(plain, ".gitignore", "gen/\n")
    write(plain, "a.py", distinct_module(6))
    write(plain, "gen/b.py", distinct_module(7))
    write(plain, "gen/c.py", distinct_module(8))
    write(plain, "build/classes/d.py", distinct_module(9))  # Gradle-style output: skipped
    walked = collect(CollectConfig(sources=[str(plain)], out=tmp_path / "c2"))
    assert [r["path"] for r in read_corpus(walked.out)] == ["a.py"]
    assert manifest_of(walked)["counts"]["skipped"] == {"gitignored": 2, "skip_dirs": 1}


def test_clone_cache_follows_new_commits(tmp_path):
    repo = make_repo(tmp_path / "origin" / "demo", {"a.py": distinct_module(1)})
    url, cache = f"file://{repo}", tmp_path / "cache"
    first = collect(CollectConfig(sources=[url], out=tmp_path / "c", cache_dir=cache))
    assert [r["path"] for r in read_corpus(first.out)] == ["a.py"]
    write(repo, "b.py", distinct_module(2))
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "b", cwd=repo)
    second = collect(CollectConfig(sources=[url], out=tmp_path / "c", cache_dir=cache))
    assert not second.skipped
    assert sorted(r["path"] for r in read_corpus(second.out)) == ["a.py", "b.py"]
    git("rm", "-q", "a.py", cwd=repo)
    git("commit", "-q", "-m", "drop a", cwd=repo)
    forced = collect(CollectConfig(sources=[url], out=tmp_path / "c", cache_dir=cache, force=True))
    assert [r["path"] for r in read_corpus(forced.out)] == ["b.py"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    assert manifest_of(forced)["sources"][0]["commit"] == commit.stdout.strip()
    again = collect(CollectConfig(sources=[url], out=tmp_path / "c", cache_dir=cache))
    assert again.skipped  # nothing moved: nothing to do
    assert len(list((cache / "git").iterdir())) == 1  # one clone, updated in place


def test_same_named_repositories_stay_apart(tmp_path):
    from codetune.dataset.splits import resolve_split_by

    sources = []
    for i, owner in enumerate(("alice", "bob", "carol")):
        path = make_repo(
            tmp_path / owner / "repo", {f"m{j}.py": distinct_module(10 * i + j) for j in range(3)}
        )
        sources.append(f"file://{path}" if i == 0 else str(path))
    result = collect(CollectConfig(sources=sources, out=tmp_path / "c", cache_dir=tmp_path / "cache"))
    rows = read_corpus(result.out)
    assert sorted({r["repo"] for r in rows}) == sorted(
        str(tmp_path / o / "repo") for o in ("alice", "bob", "carol")
    )
    assert resolve_split_by(rows, "auto") == "repo"  # build splits by repository, not by file
    from codetune.collect.sources import repo_name

    assert repo_name("https://github.com/acme/repo.git") == "github.com/acme/repo"
    assert repo_name("git@gitlab.com:team/repo.git") == "gitlab.com/team/repo"
    assert repo_name("https://gitlab.com/other/repo") == "gitlab.com/other/repo"


def test_bare_repository_path_is_collected(tmp_path):
    repo = make_repo(tmp_path / "origin", {"a.py": distinct_module(1), "b.py": distinct_module(2)})
    bare = tmp_path / "mirror"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True, capture_output=True)
    result = collect(CollectConfig(sources=[str(bare)], out=tmp_path / "c", cache_dir=tmp_path / "cache"))
    assert sorted(r["path"] for r in read_corpus(result.out)) == ["a.py", "b.py"]
    assert manifest_of(result)["sources"][0]["kind"] == "git"


def test_git_clone_shows_progress(tmp_path):
    repo = make_repo(tmp_path / "origin", {"a.py": distinct_module(1)})
    proc = run_cli(
        "collect",
        f"file://{repo}",
        "-l",
        "python",
        "-o",
        str(tmp_path / "c"),
        "--set",
        f"cache_dir={tmp_path / 'cache'}",
    )
    assert proc.returncode == 0, proc.stderr
    assert f"clone file://{repo}" in proc.stderr
    assert "Receiving objects: 100%" in proc.stderr


# ---- links never leave the source ----------------------------------------------------------------

SECRET = "HOST_SECRET_7f3a"


def host_dir(tmp_path: Path) -> Path:
    """A folder outside every source, holding files that must never reach a corpus."""
    outside = tmp_path / "host"
    write(outside, "secret.py", distinct_module(77).replace("import", f"# {SECRET}\nimport"))
    write(outside, "pkg/inner.py", distinct_module(78).replace("import", f"# {SECRET}\nimport"))
    return outside


def assert_no_secret(result) -> None:
    rows = read_corpus(result.out)
    assert rows and not any(SECRET in r["content"] for r in rows)


def test_links_outside_a_folder_or_git_repo_are_not_followed(tmp_path):
    outside = host_dir(tmp_path)
    src = tmp_path / "src"
    write(src, "ok.py", distinct_module(1))
    write(src, "real/inside.py", distinct_module(2))
    (src / "inside.py").symlink_to(src / "real" / "inside.py")  # inside: followed
    (src / "escape").symlink_to(outside, target_is_directory=True)
    (src / "leak.py").symlink_to(outside / "secret.py")
    (src / "relative.py").symlink_to("../host/secret.py")
    folder = collect(
        CollectConfig(sources=[str(src)], out=tmp_path / "c1", exact_dedup=False, near_dedup=False)
    )
    assert_no_secret(folder)
    assert sorted(r["path"] for r in read_corpus(folder.out)) == ["inside.py", "ok.py", "real/inside.py"]
    assert manifest_of(folder)["counts"]["dropped"]["link_outside"]["files"] == 3
    # The same links committed to a git repository: listed by git in place, and cloned over file://.
    repo = make_repo(tmp_path / "repo", {"ok.py": distinct_module(1)})
    (repo / "escape").symlink_to(outside, target_is_directory=True)
    (repo / "leak.py").symlink_to(outside / "secret.py")
    (repo / "relative.py").symlink_to("../host/secret.py")
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "links", cwd=repo)
    for name, source in (("c2", str(repo)), ("c3", f"file://{repo}")):
        result = collect(CollectConfig(sources=[source], out=tmp_path / name, cache_dir=tmp_path / "cache"))
        assert_no_secret(result)
        assert [r["path"] for r in read_corpus(result.out)] == ["ok.py"]
        assert manifest_of(result)["counts"]["dropped"]["link_outside"]["files"] == 3, name


def test_links_outside_an_archive_are_not_followed(tmp_path):
    outside = host_dir(tmp_path)
    tar_path = tmp_path / "links.tar"
    with tarfile.open(tar_path, "w") as archive:
        data = distinct_module(1).encode()
        info = tarfile.TarInfo("pkg/ok.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        for name, target in (
            ("pkg/abs.py", str(outside / "secret.py")),
            ("pkg/up.py", "../../../../../../../../../.." + str(outside / "secret.py")),
            ("pkg/dir", str(outside)),
            ("alias/ok.py", "../pkg/ok.py"),  # inside, alone in its folder: kept (as a duplicate)
        ):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            archive.addfile(link)
    zip_path = tmp_path / "links.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("z/ok.py", distinct_module(2))
        for name, target in (
            ("z/abs.py", str(outside / "secret.py")),
            ("z/up.py", "../../../../../../../../.." + str(outside / "secret.py")),
        ):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # a symlink, as Info-ZIP stores one
            archive.writestr(info, target)
    for name, path in (("c1", tar_path), ("c2", zip_path)):
        result = collect(
            CollectConfig(sources=[str(path)], out=tmp_path / name, cache_dir=tmp_path / "cache")
        )
        assert_no_secret(result)
        assert len(read_corpus(result.out)) == 1
        expected = 3 if path == tar_path else 2
        assert manifest_of(result)["counts"]["dropped"]["link_outside"]["files"] == expected, name
    assert manifest_of(result)["counts"]["dropped"].get("exact_duplicate") is None
    tar_dropped = json.loads((tmp_path / "c1" / "manifest.json").read_text())["counts"]["dropped"]
    assert tar_dropped["exact_duplicate"]["files"] == 1  # the inside link was unpacked and read


# ---- bounded unpacking -----------------------------------------------------------------------------


def cache_files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


def test_zip_bomb_is_refused_and_leaves_nothing_behind(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("ok.py", distinct_module(1))
        for i in range(20):
            archive.writestr(f"zeros/{i:02d}.py", bytes(100_000))
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=r"refused: .*max_unpack_bytes"):
        collect(
            CollectConfig(sources=[str(bomb)], out=tmp_path / "c", cache_dir=cache, max_unpack_bytes=500_000)
        )
    assert cache_files(cache) == []
    with pytest.raises(InputError, match=r"refused: .*max_unpack_files"):
        collect(CollectConfig(sources=[str(bomb)], out=tmp_path / "c", cache_dir=cache, max_unpack_files=5))
    assert cache_files(cache) == [] and not (tmp_path / "c").exists()
    proc = run_cli(
        "collect",
        str(bomb),
        "-l",
        "python",
        "-o",
        str(tmp_path / "c"),
        "--set",
        f"cache_dir={cache}",
        "--set",
        "max_unpack_bytes=500000",
    )
    assert_clean_error(proc, "refused", "max_unpack_bytes")


def zeros_zip(
    path: Path, entries: dict[str, bytes], zeros_name: str, size: int = 1 << 30, zeros_mode: int = 0
) -> None:
    """A zip holding ``entries`` and one member of ``size`` bytes of zeros (a multiple of 16 MiB; its
    mode ``zeros_mode``, e.g. a symlink's), written in a second: the deflate stream of 16 MiB of zeros
    is made once and repeated (full flushes make it byte-aligned)."""
    import struct
    import zlib

    block = bytes(1 << 24)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    repeats = size >> 24
    crc = 0
    for _ in range(repeats):
        crc = zlib.crc32(block, crc)
    members = [(name, 0, zlib.crc32(data), len(data), [data], 0) for name, data in entries.items()]
    members.append((zeros_name, 8, crc, (1 << 24) * repeats, [chunk] * repeats + [b"\x03\x00"], zeros_mode))
    central, offset = b"", 0
    with path.open("wb") as handle:
        for name, method, crc32, unpacked, parts, mode in members:
            raw = name.encode()
            packed = sum(len(p) for p in parts)
            header = struct.pack(
                "<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc32, packed, unpacked, len(raw), 0
            )
            handle.write(header + raw)
            for part in parts:
                handle.write(part)
            central += (
                struct.pack(
                    "<IHHHHHHIIIHHHHHII",
                    0x02014B50,
                    0x0314 if mode else 20,  # made on Unix, where the high attribute bits are a mode
                    20,
                    0,
                    method,
                    0,
                    0x21,
                    crc32,
                    packed,
                    unpacked,
                    len(raw),
                    0,
                    0,
                    0,
                    0,
                    mode << 16,
                    offset,
                )
                + raw
            )
            offset += len(header) + len(raw) + packed
        handle.write(central)
        handle.write(
            struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), offset, 0)
        )


def test_realistic_zip_bomb_with_default_bounds(tmp_path):
    """About 1 MB of zip that inflates to 1 GiB of zeros: never written, under the default limits."""
    bomb = tmp_path / "bomb.zip"
    zeros_zip(bomb, {"ok.py": distinct_module(1).encode()}, "zeros.py")
    assert bomb.stat().st_size < 2 << 20
    with zipfile.ZipFile(bomb) as archive:  # a well-formed zip, as the issue's
        assert archive.getinfo("zeros.py").file_size == 1 << 30
    cache = tmp_path / "cache"
    result = collect(CollectConfig(sources=[str(bomb)], out=tmp_path / "c", cache_dir=cache))
    assert [r["path"] for r in read_corpus(result.out)] == ["ok.py"]
    assert manifest_of(result)["counts"]["dropped"]["too_large"]["files"] == 1
    assert sum(p.stat().st_size for p in cache_files(cache)) < 1 << 20


def test_odd_archive_members_are_skipped_and_counted(tmp_path):
    long_name = "pkg/" + "n" * 300 + ".py"
    zip_path = tmp_path / "odd.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("pkg/ok.py", distinct_module(1))
        archive.writestr(long_name, distinct_module(2))
        archive.writestr("clash", "a file")
        archive.writestr("clash/inner.py", distinct_module(3))
    tar_path = tmp_path / "odd.tar.gz"
    with tarfile.open(tar_path, "w:gz") as archive:
        for name, text in (
            ("lib/ok.py", distinct_module(4)),
            ("lib/" + "m" * 300 + ".py", distinct_module(5)),
            ("lib/x.py/inner.py", distinct_module(6)),
            ("lib/x.py", distinct_module(7)),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    other = tmp_path / "plain"
    write(other, "plain.py", distinct_module(8))
    result = collect(
        CollectConfig(
            sources=[str(zip_path), str(tar_path), str(other)],
            out=tmp_path / "c",
            cache_dir=tmp_path / "cache",
        )
    )
    assert sorted(r["path"] for r in read_corpus(result.out)) == [
        "lib/ok.py",
        "lib/x.py/inner.py",
        "pkg/ok.py",
        "plain.py",
    ]
    assert manifest_of(result)["counts"]["dropped"]["bad_member"]["files"] == 4


# ---- docs crawler stays on its host ------------------------------------------------------------


class Pages(BaseHTTPRequestHandler):
    """Serves ``pages`` (path -> HTML, or ("redirect", location)) and records each path asked for."""

    pages: ClassVar[dict] = {}
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        type(self).hits.append(self.path)
        page = self.pages.get(self.path, "")
        if isinstance(page, tuple):
            self.send_response(302)
            self.send_header("Location", page[1])
            body = b""
        else:
            body = page.encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_docs_crawl_does_not_follow_redirects_to_other_hosts(tmp_path):
    class Elsewhere(Pages):
        pages: ClassVar[dict] = {
            "/page.html": "<html><body><h2>E</h2><pre>elsewhere.secret()</pre></body></html>"
        }
        hits: ClassVar[list[str]] = []

    other, other_base = serve(Elsewhere)

    class Site(Pages):
        pages: ClassVar[dict] = {
            "/index.html": '<html><body><a href="/away">a</a> <a href="/moved">m</a></body></html>',
            "/away": ("redirect", f"{other_base}/page.html"),
            "/moved": ("redirect", "/here.html"),
            "/here.html": "<html><body><h2>Here</h2><pre>here.ok()</pre></body></html>",
        }

    site, base = serve(Site)
    try:
        result = collect(
            CollectConfig(
                sources=[f"docs:{base}/index.html"], out=tmp_path / "c", language="javascript", docs_delay=0
            )
        )
    finally:
        site.shutdown()
        other.shutdown()
    assert [r["content"] for r in read_corpus(result.out)] == ["here.ok()"]  # same-host redirect followed
    assert Elsewhere.hits == []
