"""The hostile-input suite (issue 26): attacks on a real server on 127.0.0.1 and on `codetune serve`,
each answered as docs/security.md promises. Clients told apart by the server come from two loopback
addresses (127.0.0.1 and 127.0.0.2), as two machines would.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from tests.helpers.cli import assert_error_line, free_port, run_cli

pytestmark = pytest.mark.hostile

PROMPT = "def add(a, b):\n    return"
SECRET = "SECRET-MARKER-7f3a"
# Outside every repository: a host file a link points at. It reads like code, so retrieval would pick it.
HOST_FILE = f"def shadow_password_entry(user):\n    return 'root:x:0:0:{SECRET}:/root:/bin/bash'\n"
CURSOR = "def shadow_password_entry(user):\n    return 'root:x:0:0:"
APP = "def compute_invoice_total(items, rate):\n    return sum(items) * rate\n"
NEIGHBOUR = "127.0.0.1"
OTHER = "127.0.0.2"  # a second client machine


def client(address: str, timeout: float = 120) -> httpx.Client:
    """An HTTP client whose connections come from ``address``."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=timeout)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A repository whose links leave it: a file link, a chain of links, a folder link; and one link
    that stays inside (indexed, as collect does)."""
    root = tmp_path_factory.mktemp("hostile")
    outside = root / "host"
    (outside / "etc").mkdir(parents=True)
    (outside / "passwd.py").write_text(HOST_FILE)
    (outside / "etc" / "shadow.py").write_text(HOST_FILE)
    repo = root / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "app.py").write_text(APP)
    (repo / "pkg" / "passwd.py").symlink_to(outside / "passwd.py")  # pkg/passwd.py -> /etc/passwd
    (repo / "pkg" / "hop.py").symlink_to(outside / "passwd.py")
    (repo / "pkg" / "chain.py").symlink_to("hop.py")  # a chain: chain.py -> hop.py -> outside
    (repo / "etc").symlink_to(outside / "etc")  # a folder link
    (repo / "pkg" / "same.py").symlink_to("app.py")  # stays inside
    return repo


@pytest.fixture(scope="module")
def server(launch, repo):
    start, stop = launch
    running = start(repos=[repo], repo_refresh_s=0, header_timeout_s=1.0)
    yield running
    stop(running)


def post(url: str, body: dict | bytes, path: str = "/v1/completions", via: httpx.Client | None = None):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    send = via.post if via is not None else httpx.post
    return send(url + path, content=content, headers={"content-type": "application/json"}, timeout=120)


def settle(server, timeout: float = 60) -> None:
    """Wait until nothing runs or waits on the server (a test's leftovers are gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(server.url + "/health", timeout=10).json()
        if health["active"] == 0 and health["waiting"] == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"the server did not settle: {health}")


# -- 1. serve --repo never reads through links leaving the folder ----------------------------------------------
def test_repo_links_leaving_the_folder_are_never_served(server):
    body = {
        "language": "python",
        "segments": {"prefix": CURSOR, "suffix": "\n", "filepath": "pkg/new.py"},
        "debug_options": {"return_snippets": True, "return_prompt": True},
    }
    answer = post(server.url, body).json()
    snippets = answer["debug_data"]["snippets"]
    assert SECRET not in json.dumps(answer), snippets
    assert not any("passwd" in s["filepath"] or "etc/" in s["filepath"] for s in snippets)
    # The repository's own files are served (the link inside it too): the index is not simply empty.
    body["segments"]["prefix"] = "def compute_invoice_total(items, rate):\n    return sum("
    found = post(server.url, body).json()["debug_data"]["snippets"]
    assert {s["filepath"] for s in found} & {"pkg/app.py", "pkg/same.py"}, found
    skipped = server.service.repos.repos[0].skipped
    assert skipped.get("link_outside", 0) >= 3, skipped  # the file link, the chain, the folder link


# -- 5. one client cannot starve the others ---------------------------------------------------------------------
GREEDY = {"prompt": ["a"] * 64, "max_tokens": 1000, "min_tokens": 1000, "stream": True}


def test_a_greedy_client_does_not_starve_its_neighbour(server):
    settle(server)
    started, stop, finished = threading.Event(), threading.Event(), threading.Event()

    def greedy() -> None:
        with (
            client(OTHER) as http,
            http.stream("POST", server.url + "/v1/completions", json=GREEDY) as answer,
        ):
            assert answer.status_code == 200
            for line in answer.iter_lines():
                started.set()
                if stop.is_set() or line == "data: [DONE]":
                    break
        finished.set()

    thread = threading.Thread(target=greedy, daemon=True)
    thread.start()
    try:
        assert started.wait(60), "the greedy request never started"
        with client(OTHER) as http:  # the greedy client filled the queue alone: over its share
            more = post(server.url, {"prompt": "x", "max_tokens": 2}, via=http)
        assert more.status_code == 503 and more.json()["error"]["code"] == "queue_full", more.text
        with client(NEIGHBOUR) as http:  # the neighbour is queued, and runs at once
            for _ in range(4):
                answer = post(server.url, {"prompt": PROMPT, "max_tokens": 8, "min_tokens": 8}, via=http)
                assert answer.status_code == 200, answer.text
                assert answer.json()["usage"]["completion_tokens"] == 8
        assert not finished.is_set(), "the greedy request ended first: nothing was shown"
        health = httpx.get(server.url + "/health", timeout=10).json()
        assert health["clients"] == 1 and health["waiting"] > 0  # the greedy one's rows still wait
    finally:
        stop.set()
        thread.join(timeout=60)
    settle(server)  # the greedy rows, queued and running, went with their client


def test_health_answers_while_megabyte_prompts_are_tokenized(server):
    settle(server)
    text = "".join(f"value_{i} = compute(value_{i - 1}, {i})\n" for i in range(1, 8_000))  # ~250 KB
    body = {"prompt": text, "suffix": text, "max_tokens": 1}
    assert len(json.dumps(body)) < 1_000_000  # within the body limit
    done: list[float] = []

    def big() -> None:
        assert post(server.url, body).status_code == 200
        done.append(time.monotonic())

    threads = [threading.Thread(target=big, daemon=True) for _ in range(3)]
    sent = time.monotonic()
    for thread in threads:
        thread.start()
    waits = []
    while len(done) < 3 and time.monotonic() - sent < 120:
        begin = time.monotonic()
        assert httpx.get(server.url + "/health", timeout=60).status_code == 200
        waits.append(time.monotonic() - begin)
        time.sleep(0.02)
    for thread in threads:
        thread.join(timeout=120)
    slowest = max(done) - sent
    # Three prompts of half a megabyte take seconds to tokenize; /health never waits for them (on the
    # event loop it waited for all three: about `slowest`).
    assert slowest > 1.0, "the prompts were too quick to show anything"
    assert max(waits) < slowest / 4, (max(waits), slowest)


# A pattern that backtracks for seconds on any line of more than a few characters.
REDOS = r"(?:(.?){1,9}){1,9}(?=(?!))"


def test_redos_patterns_end_at_once_and_do_not_hold_up_a_neighbour(server):
    settle(server)
    small = {"prompt": PROMPT, "max_tokens": 16, "min_tokens": 16, "temperature": 0}

    def neighbour() -> float:
        begin = time.monotonic()
        with client(NEIGHBOUR) as http:
            assert post(server.url, small, via=http).status_code == 200
        return time.monotonic() - begin

    alone = min(neighbour() for _ in range(2))
    hostile = {
        "prompt": PROMPT,
        "max_tokens": 24,
        "min_tokens": 24,
        "n": 12,
        "truncate_before_pattern": [REDOS],
    }
    answers: list[httpx.Response] = []

    def attack() -> None:
        with client(OTHER) as http:
            answers.append(post(server.url, hostile, via=http))

    threads = [threading.Thread(target=attack, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    delayed = neighbour()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == 4
    for answer in answers:
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "pattern_timeout", answer.text
    # 48 rows' searches of at least 50 ms each would take 2.4 s: the rows of a request share one
    # budget, and a search is cut off at its deadline.
    assert delayed - alone < 2.4, (alone, delayed)
    settle(server)


# -- 6. slow headers ----------------------------------------------------------------------------------------------
def test_connections_sending_headers_slowly_are_closed(server):
    url = urlparse(server.url)
    socks = []
    for _ in range(800):
        sock = socket.create_connection((url.hostname, url.port), timeout=10)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        socks.append(sock)
    open_socks = set(socks)
    watch = selectors.DefaultSelector()  # epoll: select() stops at file descriptor 1024
    for sock in socks:
        watch.register(sock, selectors.EVENT_READ)
    answered = 0
    deadline = time.monotonic() + 20
    try:
        while open_socks and time.monotonic() < deadline:
            for sock in list(open_socks):  # a header line now and then, never the blank line that ends them
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    watch.unregister(sock)
                    open_socks.discard(sock)
            for key, _ in watch.select(0.5):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                assert not data or data.startswith(b"HTTP/1.1 408"), data
                answered += bool(data)
                watch.unregister(sock)
                open_socks.discard(sock)
            assert httpx.get(server.url + "/health", timeout=10).status_code == 200
        assert not open_socks, f"{len(open_socks)} slow connections still open after 20 s"
        assert answered, "no connection was told why it was closed (408)"
    finally:
        watch.close()
        for sock in socks:
            sock.close()


# -- 10. hostile values are 400s on every route ---------------------------------------------------------------
HUGE = "1" + "0" * 4400  # an integer literal over Python's 4,300 digits
ROUTES = {
    "/v1/completions": {"prompt": "x", "max_tokens": HUGE},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "x"}], "max_tokens": HUGE},
    "/v1/fim/completions": {"prompt": "x", "max_tokens": HUGE},
    "/v1/engines/codegen/completions": {"prompt": "x", "max_tokens": HUGE},
    "/infill": {"input_prefix": "x", "n_predict": HUGE},
    "/completion": {"prompt": "x", "n_predict": HUGE},
    "/api/generate": {"model": "codetune", "prompt": "x", "options": {"num_predict": HUGE}},
    "/api/show": {"model": "codetune", "verbose": HUGE},
    "/generate": {"inputs": "x", "parameters": {"max_new_tokens": HUGE}},
    "/generate_stream": {"inputs": "x", "parameters": {"max_new_tokens": HUGE}},
    "/": {"inputs": "x", "parameters": {"max_new_tokens": HUGE}},
    "/v1/events": {"id": "cmpl-x", "event": "accepted", "at": HUGE},
    "/v1/feedback": {"id": "cmpl-x", "accepted": True, "chars": HUGE},
    "/admin/adapters": {"name": "codetune", "path": "x", "step": HUGE},
}
LONE = "\ud800"  # a lone surrogate, written into the raw JSON below as its escape
TABBY = {"language": "python", "segments": {"prefix": "x"}}
BAD_STRINGS = {
    "/api/generate model": ("/api/generate", {"model": f"a{LONE}b", "prompt": "x"}),
    "/api/show model": ("/api/show", {"model": f"a{LONE}b"}),
    "/infill input_extra text": ("/infill", {"input_prefix": "x", "input_extra": [{"text": LONE}]}),
    "/infill input_extra filename": (
        "/infill",
        {"input_prefix": "x", "input_extra": [{"filename": f"{LONE}.py", "text": "y"}]},
    ),
    "Tabby declarations body": (
        "/v1/completions",
        {**TABBY, "segments": {"prefix": "x", "declarations": [{"filepath": "a.py", "body": LONE}]}},
    ),
    "Tabby snippet filepath": (
        "/v1/completions",
        {
            **TABBY,
            "segments": {
                "prefix": "x",
                "relevant_snippets_from_changed_files": [{"filepath": LONE, "body": "y", "score": 1}],
            },
        },
    ),
    # json.dumps writes NaN and Infinity as the JavaScript literals clients send.
    "/infill temperature NaN": ("/infill", {"input_prefix": "x", "temperature": float("nan")}),
    "/completion temperature NaN": ("/completion", {"prompt": "x", "temperature": float("nan")}),
    "/completion temperature -Infinity": ("/completion", {"prompt": "x", "temperature": float("-inf")}),
    "/infill top_p 1e999": ("/infill", {"input_prefix": "x", "top_p": float("inf")}),
}


@pytest.mark.parametrize("path", list(ROUTES))
def test_huge_integer_literals_are_400_on_every_route(server, path):
    raw = json.dumps(ROUTES[path]).replace(f'"{HUGE}"', HUGE).encode()
    answer = post(server.url, raw, path)
    assert answer.status_code == 400, answer.text
    assert "digits" in answer.json()["error"]["message"]


@pytest.mark.parametrize("case", list(BAD_STRINGS))
def test_lone_surrogates_and_non_finite_numbers_are_400(server, case):
    path, body = BAD_STRINGS[case]
    raw = json.dumps(body)  # ensure_ascii: the surrogate goes as "\\ud800", as a JavaScript client sends it
    assert "\\ud800" in raw or "NaN" in raw or "Infinity" in raw
    answer = post(server.url, raw.encode(), path)
    assert answer.status_code == 400, answer.text


def test_every_post_route_is_covered(server):
    posts = {r.path for r in server.app.routes if "POST" in getattr(r, "methods", ())}
    assert posts == {path.replace("/codegen/", "/{engine}/") for path in ROUTES}


# -- 12. cancelling by `user` is scoped to the caller ---------------------------------------------------------
def test_another_client_sending_my_user_cannot_cancel_my_request(server):
    settle(server)
    mine = {"prompt": PROMPT, "max_tokens": 64, "min_tokens": 64, "stream": True, "user": "alice"}
    reasons: list[str] = []
    started = threading.Event()

    def stream() -> None:
        with (
            client(NEIGHBOUR) as http,
            http.stream("POST", server.url + "/v1/completions", json=mine) as answer,
        ):
            for line in answer.iter_lines():
                started.set()
                if line.startswith("data: {"):
                    reason = json.loads(line[6:])["choices"][0]["finish_reason"]
                    reasons.extend([reason] if reason else [])

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    assert started.wait(60)
    with client(OTHER) as http:  # another machine, the same `user`
        assert (
            post(server.url, {"prompt": "x", "max_tokens": 2, "user": "alice"}, via=http).status_code == 200
        )
    thread.join(timeout=120)
    assert reasons == ["length"], reasons
    # The same client's newer request still takes over from its older one (keystrokes).
    started.clear()
    reasons.clear()
    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    assert started.wait(60)
    with client(NEIGHBOUR) as http:
        assert (
            post(server.url, {"prompt": "x", "max_tokens": 2, "user": "alice"}, via=http).status_code == 200
        )
    thread.join(timeout=120)
    assert reasons == ["cancelled"], reasons


# -- 13. unknown model names --------------------------------------------------------------------------------
KNOWN = {
    "/v1/completions": {"model": "codetune", "prompt": "x", "max_tokens": 1},
    "/v1/fim/completions": {"model": "codestral-latest", "prompt": "x", "suffix": "y", "max_tokens": 1},
    "/v1/engines/codegen/completions": {"prompt": "x", "max_tokens": 1},
    "/api/generate": {
        "model": "codetune:latest",
        "prompt": "x",
        "options": {"num_predict": 1},
        "stream": False,
    },
    "/api/show": {"model": "tiny-gpt-bigcode"},
    "/generate": {"inputs": "x", "parameters": {"max_new_tokens": 1}},
}
UNKNOWN = {
    "/v1/completions": {"model": "gpt-4o", "prompt": "x", "max_tokens": 1},
    "/v1/chat/completions": {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
    "/v1/fim/completions": {"model": "mistral-large", "prompt": "x", "max_tokens": 1},
    "/v1/engines/davinci/completions": {"prompt": "x", "max_tokens": 1},
    "/api/generate": {"model": "llama3", "prompt": "x"},
    "/api/show": {"model": "llama3"},
    "/generate": {"inputs": "x", "parameters": {"adapter_id": "nope"}},
}


@pytest.mark.parametrize("path", list(UNKNOWN))
def test_an_unknown_model_is_a_404_naming_what_is_served(server, path):
    answer = post(server.url, UNKNOWN[path], path)
    assert answer.status_code == 404, answer.text
    message = answer.json()["error"]["message"]
    assert "tiny-gpt-bigcode" in message and "codestral-latest" in message, message


@pytest.mark.parametrize("path", list(KNOWN))
def test_served_names_and_editor_aliases_are_answered(server, path):
    assert post(server.url, KNOWN[path], path).status_code == 200


# -- 14. /health with an API key ------------------------------------------------------------------------------
def test_health_is_public_liveness_and_its_details_need_the_key(launch):
    start, stop = launch
    running = start(api_key="health-key")
    try:
        public = httpx.get(running.url + "/health", timeout=30)
        assert public.status_code == 200 and public.json() == {"status": "ok"}
        wrong = httpx.get(running.url + "/health", headers={"Authorization": "Bearer nope"}, timeout=30)
        assert wrong.json() == {"status": "ok"}
        keyed = httpx.get(running.url + "/health", headers={"Authorization": "Bearer health-key"}, timeout=30)
        details = keyed.json()
        assert details["model"] == "tiny-gpt-bigcode" and "sequences" in details and "uptime_s" in details
    finally:
        stop(running)


# -- 11 and 13: `codetune serve` itself -------------------------------------------------------------------------
def test_serve_on_a_port_in_use_is_one_error_before_the_model_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # A model that does not exist: loading it first would fail with another error.
        done = run_cli("serve", "--model", "no-such-model-anywhere", "--port", str(port), timeout=120)
    assert_error_line(done, f"127.0.0.1:{port}", "in use")
    assert done.stderr.count("error:") + done.stdout.count("error:") == 1


def test_serve_says_what_it_serves_at_start_up(repo):
    port = free_port()
    command = [sys.executable, "-m", "codetune", "serve", "--model", "tiny-gpt-bigcode", "--port", str(port)]
    command += ["--repo", str(repo), "--set", "device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    too_long = threading.Timer(120, process.kill)  # readline blocks: a server that never starts is killed
    too_long.start()
    try:
        for line in process.stderr:
            lines.append(line)
            if "Uvicorn running" in line:
                break
    finally:
        too_long.cancel()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    text = "".join(lines)
    assert "Uvicorn running" in text, text
    assert "model: tiny-gpt-bigcode (also answers to codetune, codestral-latest" in text, text
    assert "/v1/completions" in text and "/infill" in text and "/health" in text, text
    assert "repository repo" in text and "2 files indexed" in text and "link_outside" in text, text
