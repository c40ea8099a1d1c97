"""A new adapter rolled out without a restart (`POST /admin/adapters`): under load no request fails,
requests already running finish on the weights they started with, later ones get the new adapter's
text, and a replaced adapter is dropped once nothing runs with it."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from tests.helpers.server import make_run

BASE = "tiny-gpt-bigcode"
PROMPT = "def add(a, b):\n    return"
LONG = 600  # tokens: long enough to still run when a swap is done, on a fast machine too
KEY = "admin-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """The folder swaps may load from: every test's temporary folders are in it."""
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {name: make_run(tmp_path_factory.mktemp(name), seed=seed) for name, seed in (("a", 1), ("b", 2))}


def greedy(url, model=None, tokens=12, headers=AUTH):
    body = {"model": model, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0}
    response = httpx.post(url + "/v1/completions", json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


@pytest.fixture(scope="module")
def expected(runs, launch):
    """Each adapter's greedy texts (short, and long) from a server that has them all from the start."""
    start, stop = launch
    running = start(model=BASE, adapters=runs)
    try:
        return {
            name: {
                "short": greedy(running.url, name, headers={}),
                "long": greedy(running.url, name, LONG, {}),
            }
            for name in (BASE, "a", "b")
        }
    finally:
        stop(running)


def swap(url, name, path, headers=AUTH):
    return httpx.post(
        url + "/admin/adapters", json={"name": name, "path": str(path)}, headers=headers, timeout=120
    )


def slowed(model, seconds=0.01):
    """Every forward of the served model waits ``seconds`` first, so that a long stream is still
    decoding when a swap is done, however fast the machine (remove() the handle it returns)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.register_forward_pre_hook(lambda module, args: time.sleep(seconds))


class LongStream(threading.Thread):
    """A long greedy stream of the base route: its text, and when it ended."""

    def __init__(self, url):
        super().__init__()
        self.url, self.text, self.started, self.ended = url, "", threading.Event(), None

    def run(self):
        body = {"prompt": PROMPT, "max_tokens": LONG, "temperature": 0, "stream": True}
        with httpx.stream(
            "POST", self.url + "/v1/completions", json=body, headers=AUTH, timeout=300
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    self.text += json.loads(line[6:])["choices"][0]["text"]
                    self.started.set()
        self.ended = time.monotonic()


def test_swap_under_load_changes_texts_and_fails_no_request(runs, expected, launch, adapter_dir):
    start, stop = launch
    server = start(model=BASE, api_key=KEY, adapter_dir=adapter_dir)
    answered, failures, stopping = [], [], threading.Event()

    def client():
        while not stopping.is_set():
            sent = time.monotonic()
            try:
                answered.append((sent, greedy(server.url)))
            except Exception as error:  # any failure is what the test counts
                failures.append(repr(error))

    try:
        pause = slowed(server.service.model)
        long = LongStream(server.url)
        long.start()
        assert long.started.wait(60)
        clients = [threading.Thread(target=client) for _ in range(3)]
        for thread in clients:
            thread.start()
        while len(answered) < 6:
            time.sleep(0.02)
        response = swap(server.url, BASE, runs["a"])
        swapped = time.monotonic()
        pause.remove()
        assert response.status_code == 200, response.text
        assert response.json()["replaced"] and response.json()["models"] == [BASE]
        while sum(sent > swapped for sent, _ in answered) < 6:
            time.sleep(0.02)
        stopping.set()
        for thread in [*clients, long]:
            thread.join(120)
        assert failures == []
        old, new = expected[BASE]["short"], expected["a"]["short"]
        assert old != new
        assert all(text in (old, new) for _, text in answered)  # each on one set of weights, never a mix
        assert all(text == new for sent, text in answered if sent > swapped)
        assert any(text == old for sent, text in answered if sent < swapped)
        # The stream began before the swap and was still running when it was done: the old weights.
        assert long.ended > swapped and long.text == expected[BASE]["long"]

        # A new name beside it, then the base's route replaced again: the first swap's adapter goes.
        assert swap(server.url, "c", runs["b"]).json()["replaced"] is False
        assert greedy(server.url, "c") == expected["b"]["short"] and greedy(server.url) == new
        models = httpx.get(server.url + "/v1/models", headers=AUTH, timeout=30).json()["data"]
        assert [m["id"] for m in models] == [BASE, "c"] and models[1]["root"].startswith(str(runs["b"]))
        assert swap(server.url, BASE, runs["b"]).status_code == 200
        assert greedy(server.url) == expected["b"]["short"]
        deadline = time.monotonic() + 30
        while "swap1" in server.service.model.peft_config and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(server.service.model.peft_config) == {"swap2", "swap3"}
    finally:
        stopping.set()
        stop(server)


def test_a_run_served_alone_is_replaced_and_its_running_requests_keep_it(runs, expected, launch, adapter_dir):
    start, stop = launch
    server = start(model=str(runs["a"]), api_key=KEY, adapter_dir=adapter_dir)
    try:
        assert greedy(server.url) == expected["a"]["short"]
        pause = slowed(server.service.model)
        long = LongStream(server.url)
        long.start()
        assert long.started.wait(60)
        assert swap(server.url, str(runs["a"]), runs["b"]).status_code == 200
        swapped = time.monotonic()
        pause.remove()
        assert greedy(server.url) == expected["b"]["short"]
        long.join(120)
        assert long.ended > swapped and long.text == expected["a"]["long"]
    finally:
        stop(server)


def test_swaps_that_cannot_be_served_are_refused(runs, launch, tmp_path, adapter_dir):
    start, stop = launch
    server = start(model=BASE, api_key=KEY, adapter_dir=adapter_dir)
    try:
        assert swap(server.url, BASE, runs["a"], headers={}).status_code == 401
        missing = swap(server.url, BASE, tmp_path / "nothing")
        assert missing.status_code == 400 and "no adapter found" in missing.json()["error"]["message"]
        pickled = make_run(tmp_path / "pickled", seed=4)
        weights = pickled / "adapter" / "adapter_model.safetensors"
        weights.rename(weights.with_name("adapter_model.bin"))
        refused = swap(server.url, "p", pickled)
        assert refused.status_code == 400 and "safetensors" in refused.json()["error"]["message"]
        assert swap(server.url, "__base__", runs["a"]).status_code == 400
        assert greedy(server.url, "codetune") == greedy(server.url)  # nothing changed
    finally:
        stop(server)
