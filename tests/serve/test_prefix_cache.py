"""Prefix KV cache: keystroke-like prompts reuse earlier prompts' KV and get exactly the text they get without it."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tests.helpers.threads import threads_per_worker

from codetune.generation.engines.continuous import ContinuousEngine
from codetune.generation.params import SamplingParams
from codetune.generation.sequence import Sequence

SOURCE = Path(__file__).resolve().parents[2] / "src" / "codetune" / "generation" / "sequence.py"


def load(name: str):
    import torch

    from codetune.modeling.loading import load_model, load_tokenizer

    torch.set_num_threads(threads_per_worker())
    return load_model(name), load_tokenizer(name)


def narrow_window(folder: Path, window: int = 8) -> str:
    """tiny-starcoder2 with a window far shorter than the prompts, so that the cache crosses it."""
    from codetune.modeling.presets import preset_dir

    shutil.copytree(preset_dir("tiny-starcoder2"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["sliding_window"] = window
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def keystrokes(tokenizer, start_tokens: int = 90, count: int = 4) -> list[str]:
    """Prompts as an editor sends them while typing: the prefix of a real file, growing a few characters."""
    text = SOURCE.read_text()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    cursor = len(tokenizer.decode(ids[:start_tokens]))
    typed = [text[: cursor + 3 * i] for i in range(count)]
    # then the user deletes back to the middle of the prompt, and types on again
    return [*typed, text[: cursor // 2], text[: cursor + 4]]


def complete(engine: ContinuousEngine, tokenizer, prompts: list[str], **params) -> list[Sequence]:
    done = []
    for prompt in prompts:
        seq = Sequence(tokenizer(prompt, add_special_tokens=False)["input_ids"], SamplingParams(**params))
        done.extend(engine.run([seq]))
    return done


# MQA (GPTBigCode: one KV head), GQA (Llama: 2 KV heads for 4), and StarCoder2's sliding window
# (GQA too) narrowed to 8 tokens, so that cached prefixes are far longer than the window.
@pytest.mark.parametrize("name", ["tiny-gpt-bigcode", "tiny-llama", "tiny-starcoder2-window-8"])
def test_keystrokes_reuse_the_cached_prefix_and_get_the_same_text(name, tmp_path):
    model, tokenizer = load(narrow_window(tmp_path / "sw") if name.endswith("window-8") else name)
    prompts = keystrokes(tokenizer)
    plain = complete(ContinuousEngine(model, tokenizer), tokenizer, prompts, max_new_tokens=6)
    engine = ContinuousEngine(model, tokenizer, prefix_cache=True)
    cached = complete(engine, tokenizer, prompts, max_new_tokens=6)
    assert [s.text for s in cached] == [s.text for s in plain]
    assert all(s.finish_reason == p.finish_reason for s, p in zip(cached, plain))
    # every prompt after the first reuses all but the tokens its last keystroke changed
    assert cached[0].cached_tokens == 0
    for seq in cached[1:]:
        assert 0.4 * len(seq.prompt_ids) < seq.cached_tokens < len(seq.prompt_ids)
    stats = engine.stats()
    assert stats["prefix_cache_hits"] == len(prompts) - 1
    assert stats["prefix_cache_tokens_reused"] == sum(s.cached_tokens for s in cached)


@pytest.mark.parametrize("name", ["tiny-gpt-bigcode", "tiny-llama", "tiny-qwen2.5-coder", "tiny-starcoder2"])
def test_keystrokes_joining_a_running_batch_are_prefilled_in_its_decode_step_on_their_cached_prefix(name):
    """A cache hit that joins running rows rides along with their decode step: same text as alone."""
    import threading

    model, tokenizer = load(name)
    typed = keystrokes(tokenizer, start_tokens=60, count=3)[:3]
    long_row = "def add(a, b):\n    return"
    plain = complete(ContinuousEngine(model, tokenizer), tokenizer, [*typed, long_row], max_new_tokens=8)
    engine = ContinuousEngine(model, tokenizer, prefix_cache=True, max_batch_size=8)
    engine.start()
    try:
        [first] = complete(engine, tokenizer, typed[:1], max_new_tokens=8)  # its KV is stored
        running = Sequence(
            tokenizer(long_row, add_special_tokens=False)["input_ids"], SamplingParams(max_new_tokens=40)
        )
        finished = threading.Event()
        running.on_done = lambda s: finished.set()
        engine.submit([running])
        deadline = time.monotonic() + 60
        while len(running.tokens) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        joined = complete(engine, tokenizer, typed[1:], max_new_tokens=8)
        assert finished.wait(60)
    finally:
        engine.stop()
    assert [first.text] + [s.text for s in joined] == [s.text for s in plain[:3]]
    assert running.text.startswith(plain[3].text)
    assert all(0 < s.cached_tokens < len(s.prompt_ids) for s in joined)
    stats = engine.stats()
    assert stats["fused_joins"] == len(joined)  # each joined inside one of the long row's decode steps
    assert (
        stats["batches"] == stats["decode_steps"] + 2
    )  # passes of their own: the first prompt, the long row


def test_the_cache_stays_within_its_byte_bound_and_evicts_the_oldest(tmp_path):
    model, tokenizer = load("tiny-gpt-bigcode")
    text = SOURCE.read_text()
    # unrelated prompts (no one extends another) of about 60 tokens each
    prompts = [f"# file {i}\n" + text[i * 600 : i * 600 + 240] for i in range(6)]
    one = 4 * 2 * 60 * 64 * 4  # layers x (K, V) x tokens x head dim x fp32 bytes, one KV head
    bound_mb = 2.5 * one / 2**20  # room for about two entries
    engine = ContinuousEngine(model, tokenizer, prefix_cache=True, prefix_cache_mb=bound_mb)
    first = complete(engine, tokenizer, prompts, max_new_tokens=4)
    stats = engine.stats()
    assert 0 < stats["prefix_cache_bytes"] <= bound_mb * 2**20
    assert 1 <= stats["prefix_cache_entries"] <= 3 and stats["prefix_cache_evictions"] >= 3
    # the newest prompt is still cached, the oldest is gone: each re-sent with a new last token
    again = complete(engine, tokenizer, [prompts[-1] + "x", prompts[0] + "x"], max_new_tokens=4)
    assert again[0].cached_tokens > 0 and again[1].cached_tokens == 0
    assert engine.stats()["prefix_cache_bytes"] <= bound_mb * 2**20
    assert [s.text for s in first] == [
        s.text for s in complete(ContinuousEngine(model, tokenizer), tokenizer, prompts, max_new_tokens=4)
    ]


def test_serve_prefix_cache_false_turns_it_off():
    from codetune.serve.config import ServeConfig
    from codetune.serve.service import start_engine

    model, tokenizer = load("tiny-gpt-bigcode")
    engines = [
        start_engine(ServeConfig(device="cpu", **o), model, tokenizer) for o in ({}, {"prefix_cache": False})
    ]
    try:
        on, off = engines
        assert on.prefix_cache is not None and on.prefix_cache.max_bytes == 512 * 2**20
        assert off.prefix_cache is None and "prefix_cache_hits" not in off.stats()
    finally:
        for engine in engines:
            engine.stop()


@pytest.mark.parametrize("fused_prefill_tokens", [512, 0])
def test_rows_joining_mid_flight_with_cache_hits_get_their_text_alone(launch, fused_prefill_tokens):
    """llama.cpp clients on a real server: cache_prompt false answers alone; hits joining a batch agree,
    prefilled inside a decode step or (serve's fused_prefill_tokens=0) in a pass of their own."""
    start, stop = launch
    running = start(model="tiny-gpt-bigcode", max_batch_size=8, fused_prefill_tokens=fused_prefill_tokens)
    try:
        tokenizer = running.service.tokenizer
        typed = keystrokes(tokenizer, start_tokens=120, count=5)[:5]
        others = ["def add(a, b):\n    return", "for i in range(10):\n    print("]
        prompts = typed + others

        def ask(prompt: str, cache: bool, n_predict: int = 12) -> dict:
            body = {"prompt": prompt, "n_predict": n_predict, "temperature": 0, "cache_prompt": cache}
            response = httpx.post(running.url + "/completion", json=body, timeout=120)
            assert response.status_code == 200, response.text
            return response.json()

        alone = [ask(p, cache=False) for p in prompts]
        assert all(a["tokens_cached"] == 0 for a in alone)
        assert running.service.engine.stats()["prefix_cache_entries"] == 0  # nothing was stored

        ask(typed[0][:-20], cache=True)  # an earlier keystroke: its KV is cached

        def staggered(k: int) -> dict:
            if k == 0:  # a long row that is decoding when the others come
                return ask(others[0], cache=True, n_predict=60)
            time.sleep(0.05 * k)
            return ask(prompts[k - 1], cache=True)

        with ThreadPoolExecutor(len(prompts) + 1) as pool:
            answers = list(pool.map(staggered, range(len(prompts) + 1)))
        assert [a["content"] for a in answers[1:]] == [a["content"] for a in alone]
        assert answers[0]["content"].startswith(alone[-2]["content"])
        assert all(a["tokens_cached"] > 0 for a in answers[1:6])
        stats = httpx.get(running.url + "/health", timeout=30).json()
        assert stats["prefix_cache_hits"] >= 5 and stats["prefix_cache_tokens_reused"] > 5 * 100
        assert stats["decode_rows"] > stats["decode_steps"]  # rows shared decode steps
        if fused_prefill_tokens:  # some joined inside a decode step, on top of their cached prefix
            assert stats["fused_joins"] >= 1, stats
        else:
            assert stats["fused_joins"] == 0, stats
    finally:
        stop(running)


def test_lookup_finds_the_longest_shared_prefix_among_many_entries():
    """The block index answers as a scan over every entry would: the longest common prefix (never
    the last token), nothing under min_reuse, per adapter namespace; entries a newer prompt extends
    are dropped."""
    import random

    import torch

    from codetune.generation.prefix_cache import PrefixCache

    rng = random.Random(7)
    cache = PrefixCache(max_bytes=2**30, min_reuse=4)
    stems = [[rng.randrange(50) for _ in range(rng.randrange(5, 40))] for _ in range(30)]
    stored: list[tuple[list[int], str | None]] = []
    prompt_of: dict[int, list[int]] = {}  # the value an entry's KV is filled with -> its prompt
    for i in range(300):  # prompts branching off shared stems, as an editor session leaves them
        ids = rng.choice(stems)[: rng.randrange(1, 40)] + [
            rng.randrange(50) for _ in range(rng.randrange(0, 12))
        ]
        namespace = rng.choice([None, "kotlin"])
        layer = torch.full((1, 1, len(ids), 2), float(i))
        cache.store(ids, [(layer, layer)], namespace)
        prompt_of[i] = ids
        if len(ids) > cache.min_reuse:
            stored = [(old, ns) for old, ns in stored if not (ns == namespace and ids[: len(old)] == old)]
            stored.append((ids, namespace))
    assert len(cache) == len(stored)

    def scan(query: list[int], namespace: str | None) -> int:
        shared = [
            next((k for k, (a, b) in enumerate(zip(query, ids)) if a != b), min(len(query), len(ids)))
            for ids, ns in stored
            if ns == namespace
        ]
        best = min(max(shared, default=0), len(query) - 1)
        return best if best >= cache.min_reuse else 0

    hits = 0
    for _ in range(400):
        query = rng.choice(stems)[: rng.randrange(1, 40)] + [
            rng.randrange(50) for _ in range(rng.randrange(0, 8))
        ]
        namespace = rng.choice([None, "kotlin"])
        hit = cache.lookup(query, namespace)
        assert (hit.tokens if hit else 0) == scan(query, namespace), query
        if hit is not None:  # the columns are the first hit.tokens of an entry that shares them
            keys = hit.layers[0][0]
            source = prompt_of[int(keys[0, 0, 0, 0])]
            assert keys.shape[-2] == hit.tokens and source[: hit.tokens] == query[: hit.tokens]
        hits += hit is not None
    assert 50 < hits < 400  # both outcomes were exercised


def test_the_engine_passes_the_cache_by_the_name_the_installed_transformers_takes():
    """transformers 5.2x renamed the forward's ``past_key_values`` to ``cache`` and warns once per
    process on the old name; the engine asks the model's signature (4.56 knows only the old one).
    A fresh process, since the warning is printed once per process."""
    import subprocess
    import sys

    script = (
        "from codetune.generation.engines.continuous import ContinuousEngine\n"
        "from codetune.generation.params import SamplingParams\n"
        "from codetune.generation.sequence import Sequence\n"
        "from codetune.modeling.loading import load_model, load_tokenizer\n"
        "model, tok = load_model('tiny-llama'), load_tokenizer('tiny-llama')\n"
        "engine = ContinuousEngine(model, tok, prefix_cache=True)\n"
        "ids = tok('def add(a, b):\\n    return', add_special_tokens=False)['input_ids']\n"
        "[seq] = engine.run([Sequence(ids, SamplingParams(max_new_tokens=4))])\n"
        "print('TOKENS', len(seq.tokens))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "TOKENS 4" in done.stdout
    assert "are deprecated" not in done.stderr, done.stderr[-2000:]
