"""Continuous batching: rows join and leave between decode steps and keep their own settings."""

from __future__ import annotations

import threading
import time

import pytest

from codetune.inference.engine import Completion, SamplingParams, Sequence, generate_completions

PROMPTS = [
    "def add(a, b):\n    return",
    "import os\nimport sys\n\nclass Foo:\n    def __init__(self):\n        self.x =",
    "x = 1",
    "for i in range(10):\n    print(",
]
CAUSAL = ["tiny-gpt-bigcode", "tiny-starcoder2", "tiny-phi", "tiny-codegen", "tiny-llama"]


def load(name):
    import torch

    from codetune.modeling.loading import load_model, load_tokenizer

    torch.set_num_threads(2)
    return load_model(name), load_tokenizer(name)


@pytest.fixture(scope="module")
def bigcode():
    return load("tiny-gpt-bigcode")


def alone(model, tokenizer, prompt, **params) -> Completion:
    """What the engine generates for this prompt by itself (one ``model.generate`` row)."""
    p = SamplingParams(**params)
    [(_, [completion])] = list(generate_completions(model, tokenizer, [prompt], p, batch_size=1))
    return completion


def sequence(tokenizer, prompt, **params) -> tuple[Sequence, threading.Event]:
    done = threading.Event()
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return Sequence(ids, SamplingParams(**params), on_done=lambda s: done.set()), done


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


@pytest.fixture
def batcher_for():
    from codetune.serve.scheduler import ContinuousBatcher

    started = []

    def make(model, tokenizer, **options):
        batcher = ContinuousBatcher(model, tokenizer, **options)
        batcher.start()
        started.append(batcher)
        return batcher

    yield make
    for batcher in started:
        batcher.stop()


@pytest.mark.parametrize("name", CAUSAL)
def test_rows_joining_mid_flight_get_their_greedy_text_alone(name, batcher_for):
    model, tokenizer = load(name)
    expected = [alone(model, tokenizer, p, max_new_tokens=12).text for p in PROMPTS]
    batcher = batcher_for(model, tokenizer)
    first, first_done = sequence(tokenizer, PROMPTS[0], max_new_tokens=12)
    batcher.submit([first])
    wait_for(lambda: len(first.tokens) >= 3)  # the first row is decoding when the others come
    others = [sequence(tokenizer, p, max_new_tokens=12) for p in PROMPTS[1:]]
    batcher.submit([s for s, _ in others])
    for event in [first_done] + [e for _, e in others]:
        assert event.wait(60)
    assert [first.text] + [s.text for s, _ in others] == expected
    stats = batcher.stats()
    assert stats["decode_rows"] > stats["decode_steps"]  # some steps decoded several rows at once
    assert stats["sequences"] == 4 and stats["active"] == 0


def test_a_cancelled_row_leaves_and_the_others_finish_unchanged(bigcode, batcher_for):
    model, tokenizer = bigcode
    batcher = batcher_for(model, tokenizer)
    long, long_done = sequence(tokenizer, PROMPTS[1], max_new_tokens=400, min_new_tokens=400)
    short, short_done = sequence(tokenizer, PROMPTS[0], max_new_tokens=20)
    batcher.submit([long, short])
    wait_for(lambda: len(long.tokens) >= 4)
    batcher.cancel([long])
    assert long_done.wait(30) and short_done.wait(60)
    assert long.finish_reason == "cancelled" and len(long.tokens) < 400
    assert short.text == alone(model, tokenizer, PROMPTS[0], max_new_tokens=20).text
    wait_for(lambda: batcher.stats()["active"] == 0)
    stats = batcher.stats()
    assert stats["cancelled"] == 1 and stats["sequences"] == 2
    # The loop is idle and still serves.
    again, again_done = sequence(tokenizer, PROMPTS[2], max_new_tokens=5)
    batcher.submit([again])
    assert again_done.wait(60) and again.finish_reason == "length" and len(again.tokens) == 5


def test_each_row_keeps_its_own_settings_in_a_shared_batch(bigcode, batcher_for):
    model, tokenizer = bigcode
    prompt = PROMPTS[0]
    greedy = alone(model, tokenizer, prompt, max_new_tokens=10).text
    penalised = alone(model, tokenizer, prompt, max_new_tokens=10, repetition_penalty=1.5)
    frequency = alone(
        model, tokenizer, prompt, max_new_tokens=10, frequency_penalty=1.0, presence_penalty=0.5
    )
    stop = greedy[3:6]

    def run(companions: int):
        batcher = batcher_for(model, tokenizer)
        rows = {
            "greedy": sequence(tokenizer, prompt, max_new_tokens=10),
            "penalised": sequence(tokenizer, prompt, max_new_tokens=10, repetition_penalty=1.5),
            "frequency": sequence(
                tokenizer, prompt, max_new_tokens=10, frequency_penalty=1.0, presence_penalty=0.5
            ),
            "stop": sequence(tokenizer, prompt, max_new_tokens=10, stop=[stop]),
            "sampled": sequence(
                tokenizer, prompt, max_new_tokens=10, temperature=1.0, top_k=50, top_p=0.9, seed=5
            ),
            "logprobs": sequence(tokenizer, prompt, max_new_tokens=4, logprobs=2),
        }
        extra = [
            sequence(tokenizer, p, max_new_tokens=8, temperature=0.7, seed=i)[0]
            for i, p in enumerate(PROMPTS)
        ]
        batcher.submit([s for s, _ in rows.values()] + extra[:companions])
        for _, event in rows.values():
            assert event.wait(60)
        return {name: s for name, (s, _) in rows.items()}

    rows = run(companions=4)
    assert rows["greedy"].text == greedy
    assert rows["penalised"].text == penalised.text and rows["penalised"].text != greedy
    assert rows["frequency"].text == frequency.text
    assert rows["stop"].text == greedy[: greedy.find(stop)] and rows["stop"].finish_reason == "stop"
    assert len(rows["logprobs"].token_logprobs) == 4 and all(
        len(t) == 2 for t in rows["logprobs"].top_logprobs
    )
    assert all(lp <= 0 for lp in rows["logprobs"].token_logprobs)
    # A seeded sampled row draws the same text whatever shares its batch.
    assert run(companions=0)["sampled"].text == rows["sampled"].text


def test_beam_search_rows_fall_back_to_whole_batch_generate(bigcode, batcher_for):
    model, tokenizer = bigcode
    batcher = batcher_for(model, tokenizer)
    beam, beam_done = sequence(tokenizer, PROMPTS[0], max_new_tokens=6, num_beams=2)
    plain, plain_done = sequence(tokenizer, PROMPTS[2], max_new_tokens=6)
    batcher.submit([beam, plain])
    assert beam_done.wait(60) and plain_done.wait(60)
    assert beam.text == alone(model, tokenizer, PROMPTS[0], max_new_tokens=6, num_beams=2).text
    assert plain.text == alone(model, tokenizer, PROMPTS[2], max_new_tokens=6).text


def test_a_failing_step_errors_its_rows_and_the_loop_survives(bigcode, batcher_for, monkeypatch):
    model, tokenizer = bigcode
    batcher = batcher_for(model, tokenizer)
    broken, broken_done = sequence(tokenizer, PROMPTS[0], max_new_tokens=6)
    original = batcher._step
    monkeypatch.setattr(batcher, "_step", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    batcher.submit([broken])
    assert broken_done.wait(30)
    assert broken.finish_reason == "error" and "boom" in broken.error
    monkeypatch.setattr(batcher, "_step", original)
    fine, fine_done = sequence(tokenizer, PROMPTS[0], max_new_tokens=6)
    batcher.submit([fine])
    assert fine_done.wait(60) and fine.text == alone(model, tokenizer, PROMPTS[0], max_new_tokens=6).text


def test_server_can_still_micro_batch(launch):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    start, stop = launch
    running = start(batching="micro")
    try:
        assert type(running.serving.batcher).__name__ == "StaticEngine"
        model, tokenizer = running.serving.model, running.serving.tokenizer

        def call(prompt):
            body = {"prompt": prompt, "max_tokens": 6, "temperature": 0}
            return httpx.post(running.url + "/v1/completions", json=body, timeout=60).json()

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(call, PROMPTS))
        assert [r["choices"][0]["text"] for r in results] == [
            alone(model, tokenizer, p, max_new_tokens=6).text for p in PROMPTS
        ]
    finally:
        stop(running)


def test_seq2seq_models_are_served_by_the_micro_batcher(launch):
    import httpx

    start, stop = launch
    running = start(model="tiny-t5")
    try:
        assert type(running.serving.batcher).__name__ == "StaticEngine"
        body = {"prompt": "sort a list", "max_tokens": 5, "temperature": 0}
        response = httpx.post(running.url + "/v1/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] > 0
    finally:
        stop(running)
