"""The generation engine: batching is invisible in the results; every decoding setting does its job."""

from __future__ import annotations

import pytest

from codetune.generation.api import generate, generate_completions
from codetune.generation.engines.hf import plan_batches, run_batch
from codetune.generation.params import SamplingParams
from codetune.generation.sequence import Sequence

PROMPTS = [
    "def add(a, b):\n    return",
    "import os\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\n    def norm(self):\n",
    "for i in range(10):\n",
    "x",
]


def by_index(results):
    return dict(results)


def test_batched_equals_one_by_one(tiny):
    model, tok = tiny
    params = SamplingParams(max_new_tokens=8)
    batched = generate(model, tok, PROMPTS, params, batch_size=8)
    alone = [generate(model, tok, [p], params, batch_size=1)[0] for p in PROMPTS]
    assert batched == alone
    assert all(batched)


def test_token_budget_plans_longest_first_within_budget():
    lengths = [10, 500, 40, 300, 20, 15, 12, 11]
    new = [16] * 8
    batches = plan_batches(lengths, new, batch_size=4, token_budget=1000)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(8))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    for batch in batches:
        width = max(lengths[i] + 16 for i in batch)
        assert len(batch) == 1 or width * len(batch) <= 1000
        assert len(batch) <= 4
    assert len(batches[0]) == 1 and len(batches[-1]) == 4  # long prompts alone, short ones together


def test_results_arrive_per_prompt_with_counts(tiny):
    model, tok = tiny
    results = by_index(generate_completions(model, tok, PROMPTS, SamplingParams(max_new_tokens=5)))
    assert sorted(results) == list(range(len(PROMPTS)))
    for i, [completion] in results.items():
        assert completion.finish_reason == "length"
        assert len(completion.token_ids) == 5
        assert completion.prompt_tokens == len(tok(PROMPTS[i], add_special_tokens=False)["input_ids"])


def test_stop_sequences_and_truncate_before_pattern(tiny):
    model, tok = tiny
    full = generate(model, tok, PROMPTS[:1], SamplingParams(max_new_tokens=10))[0]
    stop = full[4:7]
    [(_, [cut])] = list(
        generate_completions(model, tok, PROMPTS[:1], SamplingParams(max_new_tokens=10, stop=[stop]))
    )
    assert cut.text == full[: full.find(stop)] and cut.finish_reason == "stop"
    pattern = "(?m)" + full[4:7].replace("\\", "\\\\")
    truncated = generate(
        model, tok, PROMPTS[:1], SamplingParams(max_new_tokens=10, truncate_before_pattern=[pattern])
    )
    assert truncated[0] == full[: full.find(full[4:7])]


def test_sampling_with_seed_is_reproducible_and_n_gives_n(tiny):
    model, tok = tiny
    params = SamplingParams(max_new_tokens=6, temperature=1.0, top_k=50, top_p=0.95, n=3, seed=3)
    first = by_index(generate_completions(model, tok, PROMPTS[:2], params))
    again = by_index(generate_completions(model, tok, PROMPTS[:2], params))
    assert [[c.text for c in first[i]] for i in range(2)] == [[c.text for c in again[i]] for i in range(2)]
    assert all(len(first[i]) == 3 for i in range(2))
    assert len({c.text for c in first[0]}) > 1


def test_beam_search_returns_n_beams(tiny):
    model, tok = tiny
    results = by_index(
        generate_completions(model, tok, PROMPTS[:2], SamplingParams(max_new_tokens=5, num_beams=3, n=2))
    )
    assert all(len(results[i]) == 2 for i in range(2))
    assert results[0][0].text != results[0][1].text


def test_repetition_penalty_and_min_new_tokens(tiny):
    model, tok = tiny
    prompt = ["def foo(x):\n    return"]
    plain = next(iter(generate_completions(model, tok, prompt, SamplingParams(max_new_tokens=6))))[1][0]
    penalised = next(
        iter(
            generate_completions(model, tok, prompt, SamplingParams(max_new_tokens=6, repetition_penalty=5.0))
        )
    )[1][0]
    assert len(set(plain.token_ids)) < len(set(penalised.token_ids))
    forced = list(
        generate_completions(model, tok, prompt, SamplingParams(max_new_tokens=4, min_new_tokens=4, stop=[]))
    )
    assert len(forced[0][1][0].token_ids) == 4


def test_cancel_stops_a_row_at_the_next_step(tiny):
    model, tok = tiny
    ids = tok(PROMPTS[0], add_special_tokens=False)["input_ids"]
    seen = []
    victim = Sequence(ids, SamplingParams(max_new_tokens=50))
    other = Sequence(ids, SamplingParams(max_new_tokens=6))

    def on_text(delta):
        seen.append(delta)
        victim.cancel()

    victim.on_text = on_text
    run_batch(model, tok, [victim, other])
    assert victim.finish_reason == "cancelled" and len(victim.tokens) < 5
    assert other.finish_reason == "length" and len(other.tokens) == 6


def test_streamed_deltas_add_up_to_the_text(tiny):
    model, tok = tiny
    ids = tok(PROMPTS[2], add_special_tokens=False)["input_ids"]
    deltas = []
    seq = Sequence(ids, SamplingParams(max_new_tokens=12, stop=["zzz"]), on_text=deltas.append)
    run_batch(model, tok, [seq])
    assert "".join(deltas) == seq.text and len(deltas) > 1


def test_seq2seq_generation(tiny_t5):
    model, tok = tiny_t5
    intents = ["sort a list in place", "reverse a string"]
    greedy = SamplingParams(max_new_tokens=6, min_new_tokens=3)
    results = by_index(generate_completions(model, tok, intents, greedy))
    assert all(len(results[i][0].token_ids) == 6 for i in range(2))
    assert results[0][0].text == generate(model, tok, intents[:1], greedy)[0]
    assert results[0][0].prompt_tokens == len(tok(intents[0])["input_ids"])  # encoder input with its EOS


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_new_tokens", -1),
        ("temperature", -0.5),
        ("top_p", 0.0),
        ("n", 0),
        ("truncate_before_pattern", ["("]),
    ],
)
def test_bad_params_are_rejected(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        SamplingParams(**{field: value}).check()
