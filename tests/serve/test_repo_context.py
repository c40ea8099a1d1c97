"""serve --repo: context retrieved from the request's own repository, the editor's context in the prompt,
and Tabby's debug_data, against a real server on 127.0.0.1 over two real repository folders."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

import codetune.serve.repos as served_repos
from codetune.context import RepoIndex
from codetune.serve.config import ServeConfig
from codetune.serve.repos import ServedRepos, git_remotes, owner_name

# Both repositories define compute_total in billing.py, differently: a snippet says which one it is from.
BILLING = "def compute_total(items, rate):\n    # {repo} billing\n    return sum(items) * rate + {bonus}\n"
CURSOR = "def invoice(items):\n    value = compute_total("
DEBUG = {"return_snippets": True, "return_prompt": True}


def make_repo(folder: Path, name: str, bonus: int, target: str, remote: str | None = None) -> Path:
    (folder / "lib").mkdir(parents=True)
    if remote is not None:  # a clone: its git config names the remote (the folder's name differs)
        (folder / ".git").mkdir()
        (folder / ".git" / "config").write_text(
            f'[core]\n\tbare = false\n[remote "origin"]\n\turl = {remote}\n'
            "\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
        )
    (folder / "lib" / "billing.py").write_text(BILLING.format(repo=name, bonus=bonus))
    (folder / "lib" / "colors.py").write_text(
        "PALETTE = ['red', 'green']\n\n\ndef shade(color):\n    return color\n"
    )
    (folder / target).write_text("import os\n\n\n" + CURSOR + "items, 2)\n    return value\n")
    (folder / "node_modules").mkdir()
    (folder / "node_modules" / "dep.py").write_text("def compute_total():\n    return 'dependency'\n")
    return folder


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("repos")
    return {
        "alpha": make_repo(root / "alpha", "alpha", 1, "app.py"),
        "beta": make_repo(
            root / "beta", "beta", 2, "tool.py", remote="git@github.com:Team/beta-upstream.git"
        ),
    }


@pytest.fixture(scope="module")
def served(repos, launch):
    start, stop = launch
    running = start(repos=[repos["alpha"], repos["beta"]], repo_refresh_s=0, context_tokens=256)
    yield running
    stop(running)


def post(server, path: str, body: dict) -> dict:
    response = httpx.post(server.url + path, json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def openai_debug(server, filepath: str | None, prompt: str = CURSOR, **extra) -> dict:
    body = {"prompt": prompt, "max_tokens": 2, "temperature": 0, "debug_options": DEBUG, **extra}
    if filepath is not None:
        body["filepath"] = filepath
    return post(server, "/v1/completions", body)


def tabby_debug(server, filepath: str, **segments) -> dict:
    body = {
        "language": "python",
        "segments": {"prefix": CURSOR, "suffix": "items, 2)\n", "filepath": filepath, **segments},
        "debug_options": DEBUG,
    }
    return post(server, "/v1/completions", body)["debug_data"]


def repo_of(snippet: dict) -> str | None:
    for name in ("alpha", "beta"):
        if f"{name} billing" in snippet["body"]:
            return name
    return None


def test_openai_route_retrieves_the_definition_from_another_file_of_the_repo(served):
    answer = openai_debug(served, "app.py")
    snippets = answer["debug_data"]["snippets"]
    billing = [s for s in snippets if s["filepath"] == "lib/billing.py"]
    assert billing and "def compute_total" in billing[0]["body"] and billing[0]["source"] == "definitions"
    assert {repo_of(s) for s in snippets} <= {"alpha", None}
    # the definition is in the prompt the model got, in the family's repository format
    prompt = answer["debug_data"]["prompt"]
    assert "alpha billing" in prompt and prompt.index("alpha billing") < prompt.index(CURSOR)
    assert "<repo_name>alpha" in prompt
    assert answer["usage"]["context_snippets_kept"] == len(snippets)
    # files under node_modules are never indexed
    assert all("dependency" not in s["body"] for s in snippets)
    # streamed, the first chunk carries it
    body = {"prompt": CURSOR, "max_tokens": 2, "filepath": "app.py", "stream": True, "debug_options": DEBUG}
    with httpx.stream("POST", served.url + "/v1/completions", json=body, timeout=120) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    assert chunks[0]["debug_data"]["snippets"] == snippets and all("debug_data" not in c for c in chunks[1:])
    # without debug_options the answer has no debug_data
    plain = post(served, "/v1/completions", {"prompt": CURSOR, "max_tokens": 2, "filepath": "app.py"})
    assert "debug_data" not in plain


def test_context_never_crosses_repositories(served, repos):
    for name, target in (("alpha", "app.py"), ("beta", "tool.py")):
        for snippets in (
            openai_debug(served, target)["debug_data"]["snippets"],
            tabby_debug(served, target)["snippets"],
            # an absolute path picks its repository too
            openai_debug(served, str(repos[name] / target))["debug_data"]["snippets"],
        ):
            assert any(repo_of(s) == name for s in snippets), snippets
            assert all(repo_of(s) in (name, None) for s in snippets)
    # Tabby's git_url names the repository of a path both have
    for name in ("alpha", "beta"):
        snippets = tabby_debug(served, "lib/colors.py", git_url=f"https://example.com/team/{name}.git")[
            "snippets"
        ]
        assert name in {repo_of(s) for s in snippets} <= {name, None}
    # a file outside every repository gets no server context
    assert openai_debug(served, "/elsewhere/x.py")["debug_data"]["snippets"] == []


def test_an_added_edited_or_deleted_file_shows_in_the_next_completion(served, repos):
    cursor = "def report():\n    return brand_new_helper("
    assert not any(
        "brand_new_helper" in s["body"]
        for s in openai_debug(served, "app.py", cursor)["debug_data"]["snippets"]
    )
    added = repos["alpha"] / "lib" / "fresh.py"
    added.write_text("def brand_new_helper(value):\n    return value * 41\n")
    try:
        snippets = openai_debug(served, "app.py", cursor)["debug_data"]["snippets"]
        assert any(s["filepath"] == "lib/fresh.py" and "* 41" in s["body"] for s in snippets)
        added.write_text("def brand_new_helper(value, extra=0):\n    return value * 4200 + extra\n")
        snippets = openai_debug(served, "app.py", cursor)["debug_data"]["snippets"]
        assert any("* 4200" in s["body"] for s in snippets) and not any(
            "* 41\n" in s["body"] for s in snippets
        )
    finally:
        added.unlink()
    snippets = openai_debug(served, "app.py", cursor)["debug_data"]["snippets"]
    assert not any(s["filepath"] == "lib/fresh.py" for s in snippets)


def test_tabby_declarations_and_snippets_are_in_the_prompt(served):
    declaration = {"filepath": "lib/lsp_only.py", "body": "def lsp_declared_name(x):\n    return x\n"}
    changed = {"filepath": "lib/changed.py", "body": "RECENT_CONSTANT = 99\n", "score": 0.7}
    data = tabby_debug(
        served,
        "app.py",
        declarations=[declaration],
        relevant_snippets_from_changed_files=[changed],
        relevant_snippets_from_recently_opened_files=[],
    )
    # the editor's snippets come first, then what the server retrieved from the repository
    assert [s["filepath"] for s in data["snippets"][:2]] == ["lib/lsp_only.py", "lib/changed.py"]
    assert {s["source"] for s in data["snippets"][:2]} == {"client"}
    assert any(repo_of(s) == "alpha" for s in data["snippets"][2:])
    assert "lsp_declared_name" in data["prompt"] and "RECENT_CONSTANT = 99" in data["prompt"]
    # each snippet's score is what its source measured: 0 (a float, as Tabby types it) for a declaration, the editor's own score
    # for its snippet, the BM25 score for a retrieved chunk; rank is the position in the prompt
    assert [s["rank"] for s in data["snippets"]] == list(range(len(data["snippets"])))
    assert [s["score"] for s in data["snippets"][:2]] == [0.0, 0.7]
    # Tabby's switch turns all context off; return_snippets alone leaves the prompt out
    body = {
        "language": "python",
        "segments": {"prefix": CURSOR, "filepath": "app.py", "declarations": [declaration]},
        "debug_options": {"return_snippets": True, "disable_retrieval_augmented_code_completion": True},
    }
    assert post(served, "/v1/completions", body)["debug_data"] == {"snippets": []}


def test_llamacpp_input_extra_is_in_the_engine_prompt(served):
    batcher = served.service.engine
    seen: list[str] = []
    submit = batcher.submit

    def record(seqs):
        seen.extend(served.service.tokenizer.decode(s.prompt_ids) for s in seqs)
        return submit(seqs)

    batcher.submit = record
    try:
        body = {
            "input_prefix": "import os\n\n\n",
            "input_suffix": "items, 2)\n",
            "prompt": CURSOR,
            "input_extra": [{"filename": "lib/ring.py", "text": "RING_CHUNK_MARKER = 1\n", "time": 1.0}],
            "n_predict": 2,
            "temperature": 0,
        }
        post(served, "/infill", body)
    finally:
        batcher.submit = submit
    [prompt] = seen
    assert "RING_CHUNK_MARKER = 1" in prompt and "lib/ring.py" in prompt
    assert prompt.index("RING_CHUNK_MARKER") < prompt.index("def invoice")
    # the chunk's file names the repository: the server adds alpha's definition, never beta's
    assert "alpha billing" in prompt and "beta billing" not in prompt


def test_locate_by_name_path_folder_hints_and_text(repos, tmp_path):
    served = ServedRepos([repos["alpha"], repos["beta"]], refresh_s=60)
    names = {r.name for r in served.repos}
    assert names == {"alpha", "beta"}

    def where(*args, **kw):
        found = served.locate(*args, **kw)
        return found and (found[0].name, found[1])

    assert where("tool.py") == ("beta", "tool.py")
    assert where("beta/lib/new_file.py") == ("beta", "lib/new_file.py")
    assert where("lib/billing.py", repo="git@example.com:team/alpha.git") == ("alpha", "lib/billing.py")
    assert where(str(repos["alpha"] / "lib" / "colors.py")) == ("alpha", "lib/colors.py")
    assert where(None, hints=["tool.py"])[0] == "beta"
    # no file named: the file sharing most lines with the text around the cursor
    assert (
        where(
            None,
            "import os\n\n\ndef invoice(items):\n    value = compute_total(items, 2)\n    return value\n",
        )[0]
        in names
    )
    assert where(None, "x") is None
    with pytest.raises(Exception, match="not a folder"):
        ServedRepos([tmp_path / "missing"])
    with pytest.raises(ValidationError, match="not a folder"):  # before any model is loaded
        ServeConfig(repos=[tmp_path / "missing"])
    # the scan is rate-limited: a new file is only seen once refresh_s has passed (or forced)
    (repos["beta"] / "late.py").write_text("LATE = 1\n")
    try:
        assert served.refresh() == []
        assert served.refresh(force=True) == ["beta"]
        assert "late.py" in served.repos[1].index.files
    finally:
        (repos["beta"] / "late.py").unlink()


def test_debug_data_scores_are_the_bm25_scores_of_the_chunks(served, repos):
    cursor = "def tint(color):\n    return shade(PALETTE"
    snippets = openai_debug(served, "app.py", cursor)["debug_data"]["snippets"]
    chunks = [s for s in snippets if s["source"] == "bm25"]
    assert chunks, snippets
    # the same search over the same files, through the index's own API
    paths = ("app.py", "lib/billing.py", "lib/colors.py")  # alpha's sources (node_modules is skipped)
    index = RepoIndex("alpha", {path: (repos["alpha"] / path).read_text() for path in paths})
    best = {chunk.text: score for score, chunk in index.search(cursor, exclude={"app.py"})}
    for snippet in chunks:
        assert snippet["score"] == round(best[snippet["body"]], 4) > 0
    assert [s["score"] for s in chunks] == sorted((s["score"] for s in chunks), reverse=True)
    assert all(s["score"] == 0.0 for s in snippets if s["source"] in ("imports", "definitions"))


def test_indexing_runs_off_the_event_loop_and_the_old_index_serves_meanwhile(served, repos, monkeypatch):
    served.service.repos.refresh(force=True)  # every index current: the next change is the only one
    started, release = threading.Event(), threading.Event()
    order: list[str] = []
    built: list[str] = []

    def held_index(name, files, *args, **kwargs):  # indexing a large repository, held until released
        built.append(name)
        started.set()
        release.wait(timeout=20)
        order.append("indexed")
        return RepoIndex(name, files, *args, **kwargs)

    monkeypatch.setattr(served_repos, "RepoIndex", held_index)
    cursor = "def report():\n    return slow_refresh_helper("
    added = repos["alpha"] / "lib" / "slow.py"
    added.write_text("def slow_refresh_helper(value):\n    return value * 7\n")
    first: dict = {}
    request = threading.Thread(target=lambda: first.update(openai_debug(served, "app.py", cursor)))
    try:
        request.start()
        assert started.wait(timeout=60)
        # while alpha is indexed again, the server answers other requests
        health = httpx.get(served.url + "/health", timeout=120)
        order.append("health")
        meanwhile = openai_debug(served, "app.py", cursor)
        order.append("completion")
    finally:
        release.set()
        request.join(timeout=120)
        added.unlink()
    assert health.status_code == 200
    assert order == ["health", "completion", "indexed"]
    # the completion during the refresh had the old index; the one that found the change waited for it
    assert not any(s["filepath"] == "lib/slow.py" for s in meanwhile["debug_data"]["snippets"])
    assert any(s["filepath"] == "lib/slow.py" for s in first["debug_data"]["snippets"])
    # alpha was indexed once, though both requests found it changed
    assert built == ["alpha"]


def test_copilot_nwo_picks_the_repository(served):
    def copilot(nwo: str | None) -> list[dict]:
        # Copilot's body: a prompt without a file path, `nwo` and `extra` beside it
        body = {
            "prompt": "# Path: lib/invoices.py\n" + CURSOR,
            "suffix": "",
            "max_tokens": 2,
            "temperature": 0,
            "top_p": 1,
            "n": 1,
            "stop": ["\n"],
            "stream": False,
            "extra": {"language": "python", "next_indent": 0, "trim_by_indentation": True,
                      "prompt_tokens": 12, "suffix_tokens": 0},
            "debug_options": DEBUG,
        }  # fmt: skip
        if nwo is not None:
            body["nwo"] = nwo
        return post(served, "/v1/engines/copilot-codex/completions", body)["debug_data"]["snippets"]

    # both repositories define compute_total: the text alone does not tell which one the cursor is in
    assert {repo_of(s) for s in copilot(None)} <= {None}
    # the folder's name, or the owner/name of its git remote (case as GitHub: insensitive)
    assert "alpha" in {repo_of(s) for s in copilot("someone/alpha")} <= {"alpha", None}
    assert "beta" in {repo_of(s) for s in copilot("team/Beta-Upstream")} <= {"beta", None}
    # a repository not served: as without nwo
    assert copilot("team/unknown") == copilot(None)


def test_owner_name_of_urls_and_of_a_worktree_git_file(tmp_path):
    for url in (
        "https://github.com/Team/Beta.git",
        "git@github.com:team/beta.git",
        "ssh://git@example.com:22/team/beta",
        "https://example.com/team/beta/",
    ):
        assert owner_name(url) == "team/beta", url
    assert owner_name("beta") is None
    # a worktree's .git is a file pointing at its git folder, whose commondir holds the config
    common = tmp_path / "main" / ".git"
    (common / "worktrees" / "wt").mkdir(parents=True)
    (common / "config").write_text('[remote "upstream"]\n\turl = https://github.com/acme/tool.git\n')
    (common / "worktrees" / "wt" / "commondir").write_text("../..\n")
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / ".git").write_text(f"gitdir: {common / 'worktrees' / 'wt'}\n")
    assert git_remotes(worktree) == {"acme/tool"}
    assert git_remotes(tmp_path) == frozenset()
