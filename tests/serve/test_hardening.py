"""Hostile HTTP requests against a real server: each gets its 4xx, and neighbours keep getting 200s."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from codetune.generation.params import MAX_STOPS

PROMPT = "def add(a, b):\n    return"
ORIGIN = "http://allowed.example"
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def server(launch):
    start, stop = launch
    running = start(max_queue=8, body_timeout_s=2, cors_origins=[ORIGIN], max_tokens_limit=64)
    yield running
    stop(running)


def post(server, body, path="/v1/completions", **headers):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json", **headers}
    return httpx.post(server.url + path, content=content, headers=headers, timeout=60)


def assert_error(response, status, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code, error


def healthy(server) -> bool:
    response = httpx.get(server.url + "/health", timeout=10)
    return response.status_code == 200 and response.json()["status"] == "ok"


class Neighbour:
    """A streaming completion running while hostile requests are in flight; must end 200 with [DONE]."""

    def __init__(self, server, max_tokens: int = 48) -> None:
        self.server, self.lines, self.status = server, [], None
        body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.7, "seed": 1, "stream": True}
        self.thread = threading.Thread(target=self._run, args=(body,), daemon=True)
        self.thread.start()

    def _run(self, body) -> None:
        with httpx.stream("POST", self.server.url + "/v1/completions", json=body, timeout=120) as response:
            self.status = response.status_code
            self.lines = [line for line in response.iter_lines() if line]

    def finish(self) -> None:
        self.thread.join(timeout=120)
        assert self.status == 200 and self.lines[-1] == "data: [DONE]", self.lines[-3:]
        assert not any('"error"' in line for line in self.lines)


INVALID = [
    ("lone surrogate in the prompt", b'{"prompt": "x\\ud800y", "max_tokens": 2}', "/v1/completions"),
    (
        "lone surrogate in a message",
        b'{"messages": [{"role": "user", "content": "\\udfff"}], "max_tokens": 2}',
        "/v1/chat/completions",
    ),
    ("JSON nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, "/v1/completions"),
    ("nested object 100,000 deep", b'{"prompt": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001, "/v1/completions"),
    ("seed beyond uint64", {"prompt": "x", "seed": 2**64, "temperature": 1}, "/v1/completions"),
    ("negative seed", {"prompt": "x", "seed": -1}, "/v1/completions"),
    ("temperature 1e-45", {"prompt": "x", "temperature": 1e-45}, "/v1/completions"),
    ("repetition_penalty 1e-45", {"prompt": "x", "temperature": 1, "repetition_penalty": 1e-45}, "/v1/completions"),
    ("repetition_penalty 1e9", {"prompt": "x", "repetition_penalty": 1e9}, "/v1/completions"),
    ("NaN top_p", b'{"prompt": "x", "top_p": NaN}', "/v1/completions"),
    ("postprocess: 0", {"prompt": "x", "suffix": "y", "postprocess": 0}, "/v1/completions"),
    ("stream: 1", {"prompt": "x", "stream": 1}, "/v1/completions"),
    ("top_logprobs as a string", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": "3"}, "/v1/chat/completions"),
    ("top_logprobs as a float", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 1.5}, "/v1/chat/completions"),
    ("1,000 stop strings x 900 chars", {"prompt": "x", "stop": ["s" * 900] * 1000}, "/v1/completions"),
    ("too many stop strings", {"prompt": "x", "stop": ["s"] * (MAX_STOPS + 1)}, "/v1/completions"),
    ("too many patterns", {"prompt": "x", "truncate_before_pattern": ["a"] * 9}, "/v1/completions"),
    ("over-long pattern", {"prompt": "x", "truncate_before_pattern": ["a" * 1000]}, "/v1/completions"),
    ("pattern that does not compile", {"prompt": "x", "truncate_before_pattern": ["(unclosed"]}, "/v1/completions"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "path"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_values_are_400_and_neighbours_unharmed(server, case, body, path):
    neighbour = Neighbour(server)
    response = post(server, body, path)
    assert_error(response, 400)
    neighbour.finish()
    assert healthy(server)


def test_more_sequences_than_the_queue_holds_is_400_not_503(server):
    response = post(server, {"prompt": ["a", "b", "c"], "n": 3, "max_tokens": 2})  # 9 > max_queue 8
    assert_error(response, 400, "too_many_sequences")
    response = post(server, {"messages": [{"role": "user", "content": "hi"}], "n": 9}, "/v1/chat/completions")
    assert_error(response, 400, "too_many_sequences")
    ok = post(server, {"prompt": ["a", "b"], "n": 4, "max_tokens": 2})  # exactly 8 fits
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 8


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_non_json_content_types_are_415(server, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(
        server.url + "/v1/completions", content=json.dumps({"prompt": "x", "max_tokens": 1}), headers=headers
    )
    assert_error(response, 415, "unsupported_media_type")
    ok = post(server, {"prompt": "x", "max_tokens": 1}, **{"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def _raw_request(server, head: str) -> socket.socket:
    url = urlparse(server.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    sock.sendall(head.encode())
    return sock


def _read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_declared_length_never_sent_is_408(server):
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 999999\r\n\r\n"
    )
    sock = _raw_request(server, head)
    sock.sendall(b'{"prompt": "' + b"x" * 18 + b'"')  # 30 bytes of 999999
    neighbour = Neighbour(server, max_tokens=8)
    started = time.monotonic()
    assert _read_status(sock) == 408
    assert time.monotonic() - started < 15
    sock.close()
    neighbour.finish()


def test_one_byte_per_second_chunked_body_is_408(server):
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    sock = _raw_request(server, head)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            try:
                sock.sendall(b"1\r\n \r\n")
            except OSError:
                return
            stop.wait(1.0)

    threading.Thread(target=trickle, daemon=True).start()
    neighbour = Neighbour(server, max_tokens=8)
    try:
        started = time.monotonic()
        assert _read_status(sock) == 408
        assert time.monotonic() - started < 15
    finally:
        stop.set()
        sock.close()
    neighbour.finish()


def test_cors_allow_list(server):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    allowed = httpx.options(server.url + "/v1/completions", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    evil = httpx.options(
        server.url + "/v1/completions", headers={"Origin": "http://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in evil.headers
    simple = httpx.get(server.url + "/v1/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_api_key_in_query_string_is_not_logged(server):
    secret = "sk-codetune-" + os.urandom(8).hex()
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    access = logging.getLogger("uvicorn.access")
    handler, level = Collect(), access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        assert httpx.get(server.url + f"/v1/models?api_key={secret}&x=1", timeout=10).status_code == 200
        deadline = time.monotonic() + 5
        while not any("/v1/models" in r for r in records) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    lines = [r for r in records if "/v1/models" in r]
    assert lines and all(secret not in line for line in lines), lines
    assert "api_key=REDACTED&x=1" in lines[0]


def test_api_key_comes_from_the_environment(tmp_path):
    """`codetune serve --help` documents CODETUNE_API_KEY, the way that keeps the key out of ps."""
    done = subprocess.run(
        [sys.executable, "-m", "codetune", "serve", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200"},
    )
    assert done.returncode == 0 and "CODETUNE_API_KEY" in done.stdout


STUCK_SERVER = """
import sys, time
from codetune.serve.app import build_service, create_app, serve
from codetune.serve.config import ServeConfig

cfg = ServeConfig(port=int(sys.argv[1]), device="cpu", log_level="warning", shutdown_timeout_s=2)
service = build_service(cfg)
forward = service.model.forward

def stuck_forward(*args, **kwargs):  # a generation that never finishes
    time.sleep(3600)
    return forward(*args, **kwargs)

service.model.forward = stuck_forward
serve(cfg, create_app(cfg, service))
"""


@pytest.mark.timeout(240)
def test_sigterm_stops_the_server_while_a_generation_is_stuck():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(STUCK_SERVER), str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.5)
        body = {"prompt": PROMPT, "max_tokens": 8}

        def hang() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the server goes away mid-request
                httpx.post(url + "/v1/completions", json=body, timeout=60)

        hung = threading.Thread(target=hang, daemon=True)
        hung.start()
        time.sleep(2)
        assert httpx.get(url + "/health", timeout=5).status_code == 200  # the loop still answers
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        proc.wait(timeout=30)
        assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
