"""Continuous batching: rows join and leave between decode steps and keep their own settings."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from tests.helpers.threads import threads_per_worker

from codetune.fim import bos_ids
from codetune.generation.api import generate_completions
from codetune.generation.params import SamplingParams
from codetune.generation.sequence import Completion, Sequence

PROMPTS = [
    "def add(a, b):\n    return",
    "import os\nimport sys\n\nclass Foo:\n    def __init__(self):\n        self.x =",
    "x = 1",
    "for i in range(10):\n    print(",
]
CAUSAL = [
    "tiny-gpt-bigcode",
    "tiny-starcoder2",
    "tiny-phi",
    "tiny-codegen",
    "tiny-llama",
    "tiny-codellama",
    "tiny-deepseek-coder",
    "tiny-qwen2.5-coder",
]


def load(name):
    import torch

    from codetune.modeling.loading import load_model, load_tokenizer

    torch.set_num_threads(threads_per_worker())
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
    # as the request builder lays a plain prompt out: BOS where the tokenizer adds one, then the text
    ids = [*bos_ids(tokenizer), *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    return Sequence(ids, SamplingParams(**params), on_done=lambda s: done.set()), done


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


@pytest.fixture
def batcher_for():
    from codetune.generation.engines.continuous import ContinuousEngine as ContinuousBatcher

    started = []

    def make(model, tokenizer, **options):
        batcher = ContinuousBatcher(model, tokenizer, **options)
        batcher.start()
        started.append(batcher)
        return batcher

    yield make
    for batcher in started:
        batcher.stop()


# Every family's joining rows are prefilled inside a decode step (fused), or apart when fusion is
# turned off. tiny-starcoder2 carries StarCoder2's sliding window (256 here, wider than these rows),
# so its rows also check that the window's cache layers are mended when rows join (issue 11 item 3).
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "apart"])
@pytest.mark.parametrize("name", CAUSAL)
def test_rows_joining_mid_flight_get_their_greedy_text_alone(name, fused, batcher_for):
    model, tokenizer = load(name)
    expected = [alone(model, tokenizer, p, max_new_tokens=12).text for p in PROMPTS]
    batcher = batcher_for(model, tokenizer, fused_prefill_tokens=512 if fused else 0)
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
    assert stats["fused_joins"] == (3 if fused else 0)


def test_sliding_window_rows_fuse_while_the_window_covers_the_batch_then_decode_past_it(
    tmp_path, batcher_for, caplog
):
    """Rows join fused while the batch fits in the window, a wider joiner apart; all decode past it."""
    model, tokenizer = load(str(sliding_window_model(tmp_path / "sw", window=64)))
    assert model.config.sliding_window == 64
    wide = PROMPTS[1] * 3  # 69 tokens: it cannot fit in the window beside the running rows
    prompts = [*PROMPTS, wide]
    params = {"max_new_tokens": 64, "min_new_tokens": 64}
    expected = [alone(model, tokenizer, p, **params).text for p in prompts]
    batcher = batcher_for(model, tokenizer, fused_prefill_tokens=512)
    first, first_done = sequence(tokenizer, PROMPTS[0], **params)
    batcher.submit([first])
    wait_for(lambda: len(first.tokens) >= 3)
    others = [sequence(tokenizer, p, **params) for p in PROMPTS[1:]]
    batcher.submit([s for s, _ in others])
    wait_for(lambda: all(len(s.tokens) >= 2 for s, _ in others))
    last, last_done = sequence(tokenizer, wide, **params)
    batcher.submit([last])
    for event in [first_done, *(e for _, e in others), last_done]:
        assert event.wait(120)
    # Each row ends well past the window: prompt plus 64 new tokens is over 64 columns.
    assert [first.text, *(s.text for s, _ in others), last.text] == expected
    stats = batcher.stats()
    assert stats["fused_joins"] == 3 and stats["decode_rows"] > stats["decode_steps"]
    assert not [r for r in caplog.records if "fused prefill failed" in r.getMessage()]


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
    monkeypatch.setattr(batcher, "_step", lambda *joiners: (_ for _ in ()).throw(RuntimeError("boom")))
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
        assert type(running.service.engine).__name__ == "StaticEngine"
        model, tokenizer = running.service.model, running.service.tokenizer

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
        assert type(running.service.engine).__name__ == "StaticEngine"
        body = {"prompt": "sort a list", "max_tokens": 5, "temperature": 0}
        response = httpx.post(running.url + "/v1/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] > 0
    finally:
        stop(running)


# -- real-model settings: sliding windows, no FIM tokens, editor-sized prompts, hostile requests ------


def sliding_window_model(folder, window: int = 8):
    """tiny-starcoder2 with StarCoder2's ``sliding_window`` set, smaller than prompt + completion."""
    import json
    import shutil

    from codetune.modeling.presets import preset_dir

    shutil.copytree(preset_dir("tiny-starcoder2"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["sliding_window"] = window
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def model_without_fim_tokens(folder):
    """tiny-codegen whose tokenizer has no FIM sentinels (as codegen-350M-mono's has none)."""
    import shutil

    from codetune.modeling.presets import preset_dir

    shutil.copytree(preset_dir("tiny-codegen"), folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        path = folder / name
        text = path.read_text()
        for sentinel in ("<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"):
            text = text.replace(sentinel, sentinel.replace("fim", "unused"))
        path.write_text(text)
    return folder


STAGGERED = [
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n",
    "import os\nimport sys\n\nclass Foo:\n    def __init__(self):\n        self.x =",
    "x = 1",
    "for i in range(10):\n    print(",
    "while True:\n    line = input()\n    if not line:\n        break\n",
    "# sum of squares\ndef squares(n):\n",
    "try:\n    run()\nexcept ValueError as error:\n",
    "numbers = [1, 2, 3]\nfor n in numbers:\n",
]


def post(url: str, body: dict, path: str = "/v1/completions") -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=120)


def test_sliding_window_rows_joining_a_running_batch_get_their_text_alone(launch, tmp_path):
    import torch

    start, stop = launch
    running = start(model=str(sliding_window_model(tmp_path / "sw")))
    try:
        serving = running.service
        assert serving.model.config.sliding_window == 8
        body = {"max_tokens": 16, "temperature": 0}
        alone = []
        for prompt in STAGGERED:
            response = post(running.url, {**body, "prompt": prompt})
            assert response.status_code == 200, response.text
            alone.append(response.json()["choices"][0]["text"])
        # Served alone equals transformers' own sliding-window generate.
        tokenizer, model = serving.tokenizer, serving.model
        ids = tokenizer(STAGGERED[1], return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.eos_token_id
            )
        assert tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True) == alone[1]

        def staggered(k: int) -> httpx.Response:
            time.sleep(0.03 * k)  # each joins while the earlier ones decode
            return post(running.url, {**body, "prompt": STAGGERED[k]})

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(staggered, range(8)))
        assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
        assert [r.json()["choices"][0]["text"] for r in responses] == alone
        stats = serving.engine.stats()
        assert stats["decode_rows"] > stats["decode_steps"]  # rows really shared steps
        assert stats["fused_joins"] == 0  # every batch is wider than the window: prefilled apart
    finally:
        stop(running)


def test_copilot_suffix_to_a_model_without_fim_tokens_is_answered_with_a_warning(launch, tmp_path):
    start, stop = launch
    folder = model_without_fim_tokens(tmp_path / "nofim")
    running = start(model=str(folder))
    try:
        copilot = {
            "prompt": "def add(a, b):\n    return",
            "suffix": "\n\nprint(add(1, 2))\n",
            "max_tokens": 6,
            "temperature": 0,
            "postprocess": False,
            "extra": {"language": "python"},
        }
        response = post(running.url, copilot, "/v1/engines/codegen/completions")
        assert response.status_code == 200, response.text
        data = response.json()
        assert "fill-in-the-middle" in data["warning"]
        plain = post(running.url, {k: v for k, v in copilot.items() if k != "suffix"}).json()
        assert data["choices"][0]["text"] == plain["choices"][0]["text"]  # answered as prefix-only
        assert "warning" not in plain
    finally:
        stop(running)
    strict = start(model=str(folder), strict_fim=True)
    try:
        response = post(strict.url, copilot, "/v1/engines/codegen/completions")
        assert response.status_code == 400 and response.json()["error"]["code"] == "fim_unsupported"
    finally:
        stop(strict)


def test_a_prompt_three_times_the_context_is_trimmed_and_usage_says_so(server_for_trim):
    running = server_for_trim
    tokenizer = running.service.tokenizer
    context = running.service.context
    line = "value = compute(value, 1)\n"
    per_line = len(tokenizer(line, add_special_tokens=False)["input_ids"])
    long_text = line * (3 * context // per_line)
    assert len(tokenizer(long_text, add_special_tokens=False)["input_ids"]) >= 3 * context - per_line
    plain = post(running.url, {"prompt": long_text, "max_tokens": 8, "temperature": 0})
    assert plain.status_code == 200, plain.text
    usage = plain.json()["usage"]
    assert usage["truncated"] and usage["prompt_tokens_kept"] <= context - 8
    assert usage["prompt_tokens"] == usage["prompt_tokens_kept"]
    assert usage["prefix_tokens_dropped"] == usage["prompt_tokens_sent"] - usage["prompt_tokens_kept"]
    fim = post(running.url, {"prompt": long_text, "suffix": long_text, "max_tokens": 8, "temperature": 0})
    assert fim.status_code == 200, fim.text
    usage = fim.json()["usage"]
    assert usage["prompt_tokens_kept"] <= context - 8
    assert usage["prefix_tokens_dropped"] > 0 and usage["suffix_tokens_dropped"] > 0
    kept_prefix = 3 * context - usage["prefix_tokens_dropped"]
    kept_suffix = 3 * context - usage["suffix_tokens_dropped"]
    assert kept_prefix > 2 * kept_suffix  # the prefix's share (0.75) is kept, the suffix's right end goes


HOSTILE = [
    ("redos pattern", {"truncate_before_pattern": ["(?:[\\s\\S]|[\\s\\S])*\\x01"]}, (200, 400)),
    ("seed past 64 bits", {"seed": 18446744073709551616, "temperature": 0.8}, (400,)),
    ("temperature 1e-45", {"temperature": 1e-45}, (400,)),
    ("repetition_penalty 1e-45", {"repetition_penalty": 1e-45, "temperature": 0.8}, (400,)),
    ("1000 stops of 900 chars", {"stop": ["x" * 900] * 1000}, (400,)),
]


@pytest.mark.parametrize(("case", "extra", "statuses"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_request_does_not_touch_its_neighbour(server_for_trim, case, extra, statuses):
    running = server_for_trim
    neighbour = {"prompt": STAGGERED[0], "max_tokens": 48, "min_tokens": 48, "temperature": 0}
    expected = post(running.url, neighbour).json()["choices"][0]["text"]

    def hostile() -> httpx.Response:
        time.sleep(0.05)  # arrives while the neighbour decodes
        body = {"prompt": "a" * 200, "max_tokens": 40, "min_tokens": 40, **extra}
        return httpx.post(running.url + "/v1/completions", json=body, timeout=30)

    with ThreadPoolExecutor(2) as pool:
        near = pool.submit(post, running.url, neighbour)
        bad = pool.submit(hostile)
        near_response, bad_response = near.result(), bad.result()
    assert near_response.status_code == 200, near_response.text
    assert near_response.json()["choices"][0]["text"] == expected
    assert bad_response.status_code in statuses, bad_response.text
    assert httpx.get(running.url + "/health", timeout=10).json()["status"] == "ok"


@pytest.fixture(scope="module")
def server_for_trim(launch):
    start, stop = launch
    running = start()
    yield running
    stop(running)


def test_a_row_whose_sampling_fails_fails_alone(bigcode, batcher_for, monkeypatch):
    import codetune.generation.engines.continuous as continuous

    model, tokenizer = bigcode
    original = continuous.choose_one

    def flaky(x, params, *args):
        if params.top_k == 7:
            raise FloatingPointError("poisoned row")
        return original(x, params, *args)

    monkeypatch.setattr(continuous, "choose_one", flaky)
    batcher = batcher_for(model, tokenizer)
    good, good_done = sequence(tokenizer, PROMPTS[0], max_new_tokens=10, temperature=0.7, seed=3)
    bad, bad_done = sequence(tokenizer, PROMPTS[1], max_new_tokens=10, temperature=0.7, top_k=7)
    batcher.submit([good, bad])
    assert good_done.wait(60) and bad_done.wait(60)
    assert bad.finish_reason == "error" and "poisoned row" in bad.error
    assert good.finish_reason == "length" and good.error is None
    assert good.text == alone(model, tokenizer, PROMPTS[0], max_new_tokens=10, temperature=0.7, seed=3).text


def test_admission_is_bounded_by_the_kv_token_budget(bigcode, batcher_for):
    model, tokenizer = bigcode
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS]
    # Room for two rows of the longest prompt plus their completions, not for four.
    budget = 2 * (max(lengths) + 10) + 1
    batcher = batcher_for(model, tokenizer, kv_token_budget=budget)
    widest = []
    original = batcher._step

    def step(joiners=()):  # rows in this forward pass: the running ones and those joining with it
        widest.append(len(batcher._rows) + len(joiners))
        original(joiners)

    batcher._step = step
    rows = [sequence(tokenizer, p, max_new_tokens=10) for p in PROMPTS]
    batcher.submit([s for s, _ in rows])
    for _, event in rows:
        assert event.wait(60)
    assert max(widest) == 2
    assert [s.text for s, _ in rows] == [alone(model, tokenizer, p, max_new_tokens=10).text for p in PROMPTS]


def test_detokenization_is_incremental(bigcode, batcher_for):
    model, tokenizer = bigcode
    expected = alone(model, tokenizer, PROMPTS[0], max_new_tokens=60)
    longest = []
    decode = tokenizer.decode

    def counting(ids, *args, **kwargs):
        longest.append(len(ids))
        return decode(ids, *args, **kwargs)

    tokenizer.decode = counting
    try:
        batcher = batcher_for(model, tokenizer)
        seq, done = sequence(tokenizer, PROMPTS[0], max_new_tokens=60)
        batcher.submit([seq])
        assert done.wait(60)
    finally:
        del tokenizer.decode
    assert seq.text == expected.text == tokenizer.decode(seq.tokens, skip_special_tokens=True)
    assert len(seq.tokens) == 60 and max(longest) <= 8  # never the whole output again


def eval_dataset(folder):
    """A held-out split of Python files as `codetune build` writes it (what eval's FIM task reads)."""
    import json

    from datasets import Dataset, DatasetDict

    texts = [
        f"def add_{i}(a, b):\n    total = a + b\n    print('value {i}', total)\n    return total\n\nx = add_{i}(1, 2)\n"
        for i in range(4)
    ]
    rows = Dataset.from_list([{"path": f"pkg/m{i}.py", "text": t} for i, t in enumerate(texts)])
    DatasetDict({"train": rows, "test": rows}).save_to_disk(str(folder))
    (folder / "stats.json").write_text(json.dumps({"format": "files", "kind": "causal", "max_length": 256}))
    return folder


def test_one_request_gives_one_text_on_every_path(launch, tmp_path):
    """CodeModel.complete, `codetune generate`, /v1/completions and eval's predictions.jsonl agree."""
    import json

    import openai
    from typer.testing import CliRunner

    import codetune
    from codetune.cli import app
    from codetune.evaluate.config import EvalConfig
    from codetune.evaluate.runner import evaluate

    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"prompt": "class Point:\n    def"}]))
    report = tmp_path / "report"
    evaluate(
        EvalConfig(
            models=["tiny-gpt-bigcode"],
            dataset=eval_dataset(tmp_path / "dataset"),
            tasks=["fim", "prompts"],
            prompts=prompts,
            samples=2,
            max_new_tokens=12,
            out=report,
            device="cpu",
        )
    )
    predictions = [json.loads(line) for line in (report / "predictions.jsonl").read_text().splitlines()]
    assert {p["task"] for p in predictions} == {"fim", "prompts"}
    assert all({"id", "model", "prefix", "suffix", "prediction", "reference"} <= set(p) for p in predictions)
    assert "post-processing" in (report / "report.md").read_text()
    stops = {"fim": ["\n"], "prompts": []}

    model = codetune.CodeModel("tiny-gpt-bigcode", device="cpu")
    api = [
        model.complete(
            p["prefix"],
            p["suffix"],
            max_new_tokens=12,
            temperature=0,
            stop=stops[p["task"]],
            language="python",
        )
        for p in predictions
    ]

    generated = []
    for task in ("fim", "prompts"):
        rows = [p for p in predictions if p["task"] == task]
        source, out = tmp_path / f"{task}.jsonl", tmp_path / f"{task}.out.jsonl"
        source.write_text(
            "".join(
                json.dumps({"id": k, "prompt": p["prefix"], "suffix": p["suffix"], "language": "python"})
                + "\n"
                for k, p in enumerate(rows)
            )
        )
        args = ["generate", "--model", "tiny-gpt-bigcode", "--input", str(source), "--out", str(out)]
        args += ["--max-new-tokens", "12", "--set", "device=cpu", "--set", f"stop={json.dumps(stops[task])}"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        by_id = {r["id"]: r["completion"] for r in map(json.loads, out.read_text().splitlines())}
        generated += [by_id[k] for k in range(len(rows))]

    start, stop = launch
    running = start()
    try:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        served = [
            client.completions.create(
                model="codetune",
                prompt=p["prefix"],
                suffix=p["suffix"],
                max_tokens=12,
                temperature=0,
                stop=stops[p["task"]] or None,
                extra_body={"extra": {"language": "python"}},
            )
            .choices[0]
            .text
            for p in predictions
        ]
    finally:
        stop(running)
    ordered = [p for t in ("fim", "prompts") for p in predictions if p["task"] == t]
    expected = [p["prediction"] for p in predictions]
    assert api == expected and served == expected
    assert generated == [p["prediction"] for p in ordered]
    assert any(p["prediction"] for p in predictions)
