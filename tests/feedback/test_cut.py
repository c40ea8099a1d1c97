"""Show what the model is sure of: the cut before the first unsure token, fitted on records whose best
floor is worked out by hand."""

from __future__ import annotations

import json
import random

import pytest
from tests.helpers.cli import assert_clean_error, run_cli
from tests.helpers.feedback import GUESS, completion, guessed_history, verdict, write

from codetune.artifacts.records import read_records
from codetune.errors import InputError
from codetune.feedback.cut import SuggestionCut, cut_below, fit_cut


@pytest.mark.parametrize(
    ("floor", "expected"),
    [(-0.05, ""), (-0.15, "a"), (-0.2, "a +"), (-1.0, "a +"), (-3.0, "a + c"), (-9.0, "a + c")],
)
def test_a_suggestion_ends_before_its_first_token_under_the_floor(floor, expected):
    assert SuggestionCut(floor).apply(**GUESS) == expected


def test_the_floor_is_where_the_records_would_have_had_most_characters_accepted(tmp_path):
    """Floors -0.1 keeps "a" (1 character a suggestion), -0.2 keeps "a +" (3), -3.0 keeps the rejected
    "a + c": -0.2 wins, and turns 24 rejected suggestions into 24 accepted ones."""
    cut, report = fit_cut(read_records(write(tmp_path, guessed_history())).labeled())
    assert cut is not None and cut.floor == pytest.approx(-0.2)
    assert report["judged"] == 24
    assert report["before"] == {"shown": 24, "accepted": 0, "accepted_chars": 0, "acceptance_rate": 0.0}
    assert report["after"] == {"shown": 24, "accepted": 24, "accepted_chars": 72, "acceptance_rate": 1.0}


def test_the_sweep_finds_the_best_floor_that_trying_every_floor_finds(tmp_path):
    """300 random suggestions (random token log-probabilities, truths that share a random part of the
    text): the fitted floor scores as well as the best of every floor tried one by one."""
    rng = random.Random(7)
    rows = []
    for n in range(300):
        words = [rng.choice(["x", " +", " y", "(", ")", ".", "ab", " = "]) for _ in range(rng.randint(1, 8))]
        text = "".join(words)
        ends = [len("".join(words[: i + 1])) for i in range(len(words))]
        keep = ends[rng.randrange(len(ends))] if rng.random() < 0.8 else 0
        truth = text[:keep] + rng.choice(["", "z", "q + 1"])
        path, prefix = f"m{n}.py", f"v{n} = "
        trace = [round(-rng.expovariate(1.0), 4) for _ in words]
        rows += [
            completion(
                f"s{n}", n, prefix=prefix, path=path, text=text, token_logprobs=trace, token_ends=ends
            ),
            verdict(f"s{n}", truth == text, n + 0.2),
            completion(f"t{n}", n + 0.5, prefix=prefix + truth + "\n", path=path, text=""),
        ]
    items = read_records(write(tmp_path, rows)).labeled()
    cut, report = fit_cut(items)

    def chars(floor):
        total = 0
        for suggestion, typed in zip(items[0::2], items[1::2], strict=True):
            c = suggestion.completion
            shown = SuggestionCut(floor).applied(c) if floor is not None else c.text
            line = shown.split("\n", 1)[0].rstrip()
            truth = typed.completion.prefix[len(c.prefix) :].split("\n", 1)[0]
            total += len(line) if line.strip() and truth.startswith(line) else 0
        return total

    floors = [None, *sorted({v for item in items for v in item.completion.token_logprobs or []})]
    best = max(chars(floor) for floor in floors)
    assert report["after"]["accepted_chars"] == chars(cut.floor if cut else None) == best
    assert best > report["before"]["accepted_chars"]


def test_no_floor_when_the_suggestions_were_right_whole(tmp_path):
    right = {"text": "a + b", "token_logprobs": [-0.1, -0.2, -3.0], "token_ends": [1, 3, 5]}
    cut, report = fit_cut(read_records(write(tmp_path, guessed_history(**right))).labeled())
    assert cut is None and report["floor"] is None
    assert report["before"]["accepted_chars"] == report["after"]["accepted_chars"] == 24 * 5


def test_too_few_known_truths_or_no_token_trace_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="at least 20"):
        fit_cut(read_records(write(tmp_path / "few", guessed_history(files=5))).labeled())
    with pytest.raises(InputError, match="token log-probabilities"):
        fit_cut(
            read_records(
                write(tmp_path / "old", guessed_history(token_logprobs=None, token_ends=None))
            ).labeled()
        )
    for spec in ("high", "0.5", "nan", "-inf"):
        with pytest.raises(InputError):
            cut_below(spec)
    assert cut_below(None) is None and cut_below("-2").floor == -2.0


def test_a_bad_token_trace_makes_a_malformed_row_not_a_crash(tmp_path):
    good = completion("good", 0, **GUESS)
    bad = [
        {**GUESS, "token_ends": [1, 3]},  # one end short
        {**GUESS, "token_logprobs": [-0.1, 0.5, -1.0]},  # a probability over 1
        {**GUESS, "token_ends": [1, 3, 9]},  # past the text
        {**GUESS, "token_ends": [3, 1, 5]},  # falling
        {**GUESS, "token_ends": None},  # half a trace
        {**GUESS, "token_logprobs": [-0.1, True, -1.0]},
        {**GUESS, "token_logprobs": [-0.1, float("nan"), -1.0]},  # JSON's NaN
        {**GUESS, "token_ends": [1, 3, 10**400]},  # a number past any text
    ]
    lines = [json.dumps({**completion(f"b{n}", 0).row(), **fields}) for n, fields in enumerate(bad)]
    write(tmp_path, [good])
    (tmp_path / "records-2026-07-02.jsonl").write_text("\n".join(lines) + "\n")
    records = read_records(tmp_path)
    assert set(records.completions) == {("good", 0)}
    assert records.completions["good", 0].token_ends == [1, 3, 5]
    assert records.counts == {"malformed_row": len(bad)}


def test_records_stats_reports_the_cut_on_records_it_never_saw(tmp_path):
    """40 files: the floor is fitted on the older 30 and reported on the newest 10, whose 10 rejected
    guesses become 10 accepted "a +"."""
    folder = write(tmp_path / "records", guessed_history(files=40))
    proc = run_cli("records", "stats", str(folder), "--cut", "--json")
    assert proc.returncode == 0, proc.stderr
    cut = json.loads(proc.stdout)["cut"]
    assert cut["fit"]["floor"] == pytest.approx(-0.2) and cut["fit"]["judged"] == 30
    assert cut["held_out"] == {
        "judged": 10,
        "before": {"shown": 10, "accepted": 0, "accepted_chars": 0, "acceptance_rate": 0.0},
        "after": {"shown": 10, "accepted": 10, "accepted_chars": 30, "acceptance_rate": 1.0},
    }
    table = run_cli("records", "stats", str(folder), "--cut")
    assert table.returncode == 0 and "after accepted_chars │ 30" in " ".join(table.stderr.split())
    few = write(tmp_path / "few", guessed_history(files=5))
    assert_clean_error(run_cli("records", "stats", str(few), "--cut"), "at least 20")
