"""`codetune build RECORDS --format feedback`: sft, kto and dpo rows from editor records."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tests.helpers.feedback import completion, typed_on, verdict, write

from codetune.artifacts.dataset import read_dataset
from codetune.dataset.builder import build
from codetune.dataset.config import BuildConfig
from codetune.errors import ConfigError, InputError
from codetune.fim import FimFormat
from codetune.modeling.loading import load_tokenizer

ADD = "def add(a, b):\n    return "


def records(folder, long_text: str = "y" * 3000):
    rows = [
        completion("c1", 0, prefix=ADD, suffix="\n", text="a + b", path="calc.py", client="alice"),
        completion("c2", 5, prefix=ADD + "a", suffix="\n", text=" - b", path="calc.py", client="alice"),
        completion("c3", 9, prefix=ADD, suffix="\n", text="a * b", path="calc.py", client="alice"),
        completion(
            "c4", 12, prefix=ADD, suffix="\n", text="a + b", path="calc.py", client="alice"
        ),  # duplicate of c1
        completion("c5", 13, prefix="z = ", suffix="", text="1", path="z.py"),  # never answered
        completion("c6", 14, prefix="w = ", suffix="", text="2", path="w.py"),  # only viewed
        completion("c7", 20, prefix="import os\n", suffix=None, text="import sys\n", path="imports.py"),
        completion("c8", 21, prefix="import os\n", suffix=None, text="print(1)\n", path="imports.py"),
        completion("c9", 30, prefix="x = ", suffix="", text="compute()\nmore()\n", path="x.py"),
        completion("c10", 40, prefix="long = ", suffix="", text=long_text, path="long.py"),
        completion(
            "c11",
            50,
            prefix="# " + "filler line\n# " * 400 + "end\nv = ",
            suffix="\n# tail " * 300,
            text="42",
            path="v.py",
        ),
        verdict("c1", True, 1),
        verdict("c2", False, 6),
        verdict("c3", False, 10),
        verdict("c4", True, 13),
        verdict("c6", None, 15),
        verdict("c7", True, 22),
        verdict("c8", False, 23),
        verdict("c9", True, 31, kept_text="compute()\n"),
        verdict("c10", True, 41),
        verdict("c11", True, 51),
    ]
    return write(folder, rows)


def built(tmp_path, rows, **options):
    """The feedback dataset of ``rows`` (no valid or test split unless asked)."""
    options = {"valid_fraction": 0, "test_fraction": 0, **options}
    out = tmp_path / "ds"
    build(BuildConfig(corpus=write(tmp_path / "records", rows), format="feedback", out=out, **options))
    return read_dataset(out)


def rows_of(dataset, objective):
    return [row for split in dataset.splits.values() for row in split if row["objective"] == objective]


def test_records_become_sft_kto_and_dpo_rows(tmp_path):
    out = tmp_path / "ds"
    cfg = BuildConfig(
        corpus=records(tmp_path / "records"),
        format="feedback",
        out=out,
        max_length=256,
        valid_fraction=0,
        test_fraction=0,
    )
    build(cfg)
    dataset = read_dataset(out)
    stats = dataset.stats
    assert stats["objectives"] == {"sft": 4, "kto": 7, "dpo": 3, "kto_desirable": 4, "kto_undesirable": 3}
    assert stats["dropped"] == {
        "no_feedback": 2,
        "empty_target": 0,
        "duplicate": 1,
        "too_long": 1,
        "identical_pair": 0,
    }
    assert stats["fim"]["family"] == "starcoder" and dataset.kind == "causal"
    tokenizer = load_tokenizer(str(out / "tokenizer"))
    fim = FimFormat.require(tokenizer)

    sft = {row["completion"]: row for row in rows_of(dataset, "sft")}
    row = sft["a + b"]
    assert row["input_ids"] == fim.example(ADD, "a + b", "\n")
    prompt = len(fim.prompt(ADD, "\n"))
    assert row["loss_mask"] == [0] * prompt + [1] * (len(row["input_ids"]) - prompt)
    # What the developer kept is the target, not the whole suggestion.
    assert sft["compute()\n"]["input_ids"] == fim.example("x = ", "compute()\n", "")
    # No suffix sent: a plain prompt, then the completion and EOS (what serve sends without a suffix).
    plain = sft["import sys\n"]
    ids = tokenizer("import os\n", add_special_tokens=False)["input_ids"]
    assert plain["input_ids"] == [
        *ids,
        *tokenizer("import sys\n", add_special_tokens=False)["input_ids"],
        tokenizer.eos_token_id,
    ]
    assert plain["loss_mask"][: len(ids)] == [0] * len(ids) and all(plain["loss_mask"][len(ids) :])
    # A prompt over max_length loses the prefix's start and the suffix's end, never the completion.
    long_prompt = sft["42"]
    assert len(long_prompt["input_ids"]) <= 256
    assert tokenizer.decode(long_prompt["input_ids"]).split("<fim_suffix>")[0].endswith("end\nv = ")
    assert tokenizer.decode(
        [t for t, m in zip(long_prompt["input_ids"], long_prompt["loss_mask"]) if m]
    ).startswith("42")

    kto = {(row["prompt"], row["completion"]): row["label"] for row in rows_of(dataset, "kto")}
    assert kto[ADD, "a * b"] == 0 and kto[ADD + "a", " - b"] == 0 and kto[ADD, "a + b"] == 1

    # Pairs share their prompt exactly: c2 was asked one typed character later, so its suggestion is
    # rewritten as a completion of c1's prompt ("a" + " - b").
    pairs = {
        (row["prompt"], row["completion"], tokenizer.decode(row["rejected_input_ids"][prompt:])): row
        for row in rows_of(dataset, "dpo")
        if row["prompt"] == ADD
    }
    assert set(pairs) == {(ADD, "a + b", "a - b<|endoftext|>"), (ADD, "a + b", "a * b<|endoftext|>")}
    for (_, chosen, rejected), pair in pairs.items():
        assert pair["input_ids"] == fim.example(ADD, chosen, "\n")
        assert pair["rejected_input_ids"] == fim.example(ADD, rejected.removesuffix("<|endoftext|>"), "\n")
        assert sum(pair["rejected_loss_mask"]) == len(pair["rejected_input_ids"]) - prompt


def test_nearly_same_prompts_share_a_split_and_test_holds_accepted_rows_only(tmp_path):
    dataset = built(tmp_path, typed_on(40, files=40), valid_fraction=0.2, test_fraction=0.2)
    where = {}
    for name, split in dataset.splits.items():
        for row in split:
            where.setdefault(row["path"], set()).add(name)
    assert all(len(names) == 1 for names in where.values())
    assert {row["objective"] for row in dataset.splits["test"]} == {"sft"} and len(dataset.splits["test"]) > 0
    assert {row["objective"] for row in dataset.splits["valid"]} == {"sft", "kto", "dpo"}
    assert dataset.stats["splits"]["test"]["kto"] == 0


def test_build_feedback_bad_input(tmp_path, cli):
    from tests.helpers.cli import assert_clean_error

    only_served = write(tmp_path / "quiet", [completion("a", 0), completion("b", 1), verdict("a", None, 2)])
    with (only_served / "records-2026-07-01.jsonl").open("a") as handle:
        handle.write("{not json\n")
    done = cli("build", str(only_served), "--format", "feedback", "--out", str(tmp_path / "ds"))
    assert_clean_error(done, "no feedback", "2 completion(s)")
    assert done.returncode == 2 and not (tmp_path / "ds").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    for corpus, message in ((empty, "no completion records"), (tmp_path / "nope", "not found")):
        with pytest.raises(InputError, match=message):
            build(BuildConfig(corpus=corpus, format="feedback", out=tmp_path / "ds"))
    with pytest.raises(ConfigError, match="repo_context needs rows that are files of a repository"):
        build(BuildConfig(corpus=only_served, format="feedback", out=tmp_path / "ds", repo_context=True))
    with pytest.raises(ConfigError, match="mix does not apply"):
        build(
            BuildConfig(
                corpus=only_served,
                format="feedback",
                out=tmp_path / "ds",
                mix=[{"format": "files", "corpus": str(empty)}],
            )
        )
    assert not (tmp_path / "ds").exists()


def test_malformed_rows_and_unknown_ids_are_counted_in_stats(tmp_path):
    folder = records(tmp_path / "records")
    with (folder / "records-2026-07-01.jsonl").open("a") as handle:
        handle.write("garbage\n" + json.dumps(verdict("ghost", True).row()) + "\n")
    build(BuildConfig(corpus=folder, format="feedback", out=tmp_path / "ds", max_length=256))
    problems = read_dataset(tmp_path / "ds").stats["records"]["problems"]
    assert problems == {"feedback_for_unknown_id": 1, "malformed_row": 1}


@pytest.mark.parametrize("typed", [True, False])
def test_the_line_typed_after_a_rejected_suggestion_is_learned(tmp_path, typed):
    """The developer dismissed `a * b` and typed `a + b` (the next prompt shows it); a suggestion that
    was never shown is followed by typing too: both typed lines become desirable rows."""
    body = "def add(a, b):\n    return "
    rows = [
        completion("r", 0, prefix=body, suffix=None, text="a * b", path="calc.py"),
        verdict("r", False, 0.5),
        completion("e", 1, prefix=body + "a + b\n", suffix=None, text="", path="calc.py"),
        completion("n", 2, prefix=body + "a + b\n\nx = ", suffix=None, text="", path="calc.py"),
        completion("z", 3, prefix=body + "a + b\n\nx = add(1, 2)\n", suffix=None, text="", path="calc.py"),
    ]
    dataset = built(tmp_path, rows, max_length=256, feedback={"typed": typed})
    kto = sorted(
        (row["prompt"].rsplit("\n", 1)[1], row["completion"], row["label"]) for row in rows_of(dataset, "kto")
    )
    dpo = [(row["completion"], row["prompt"]) for row in rows_of(dataset, "dpo")]
    if not typed:
        assert kto == [("    return ", "a * b", 0)] and not dpo and not rows_of(dataset, "sft")
        return
    assert kto == [("    return ", "a * b", 0), ("    return ", "a + b\n", 1), ("x = ", "add(1, 2)\n", 1)]
    assert sorted(row["completion"] for row in rows_of(dataset, "sft")) == ["a + b\n", "add(1, 2)\n"]
    assert dpo == [("a + b\n", body)]
    assert dataset.stats["targets"] == {"accepted": 0, "rejected": 1, "typed": 2}


@pytest.mark.parametrize("objectives", [["sft"], ["kto", "dpo"]])
def test_objectives_can_be_chosen(tmp_path, objectives):
    build(
        BuildConfig(
            corpus=records(tmp_path / "records"),
            format="feedback",
            out=tmp_path / "ds",
            max_length=256,
            feedback={"objectives": objectives},
            valid_fraction=0,
            test_fraction=0,
        )
    )
    found = {row["objective"] for split in read_dataset(tmp_path / "ds").splits.values() for row in split}
    assert found == set(objectives)


def test_cli_builds_feedback(tmp_path):
    folder = records(tmp_path / "records")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "codetune",
            "build",
            str(folder),
            "--format",
            "feedback",
            "--max-length",
            "256",
            "--out",
            str(tmp_path / "ds"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "dpo rows" in done.stderr and (tmp_path / "ds" / "stats.json").is_file()


def test_plain_rows_start_as_serve_prompts_and_learn_the_end_only_where_a_suggestion_ended(tmp_path):
    """Gemma 3 needs its BOS: a row without it trains the adapter on prompts serve never sends. And
    only a whole suggestion that the model stopped itself ends where it ends: a typed line (the
    developer went on typing), a kept part, or a suggestion cut at max_tokens must not teach the
    end token, or the adapter learns to stop after every newline and answers nothing at the start
    of a line."""
    from codetune.generation.request import context_prompt_ids

    typed_prompt = "def mul(a, b):\n    return "
    rows = [
        completion("whole", 0, prefix=ADD, suffix=None, text="a + b\n", finish_reason="stop", path="a.py"),
        completion(
            "cut", 1, prefix="x = ", suffix=None, text="compute(", finish_reason="length", path="b.py"
        ),
        completion(
            "part", 2, prefix="y = ", suffix=None, text="f()\ng()\n", finish_reason="stop", path="c.py"
        ),
        completion("bad", 3, prefix="z = ", suffix=None, text="oops", finish_reason="stop", path="d.py"),
        completion("r", 4, prefix=typed_prompt, suffix=None, text="a - b", finish_reason="stop", path="e.py"),
        completion("later", 6, prefix=typed_prompt + "a * b\n", suffix=None, text="", path="e.py"),
        verdict("whole", True, 0.5),
        verdict("cut", True, 1.5),
        verdict("part", True, 2.5, kept_text="f()\n"),
        verdict("bad", False, 3.5),
        verdict("r", False, 4.5),
    ]
    dataset = built(tmp_path, rows, model="tiny-gemma3", max_length=256)
    tokenizer = load_tokenizer(str(tmp_path / "ds" / "tokenizer"))
    assert tokenizer.bos_token_id is not None
    learned_end = {}
    for row in rows_of(dataset, "kto"):
        prompt = context_prompt_ids(tokenizer, row["prompt"], None, None)
        completion_ids = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        assert prompt[0] == tokenizer.bos_token_id
        assert row["input_ids"] == [*prompt, *completion_ids, tokenizer.eos_token_id]
        assert row["loss_mask"][: len(prompt) + len(completion_ids)] == [0] * len(prompt) + [1] * len(
            completion_ids
        )
        learned_end[row["completion"]] = row["loss_mask"][-1]
    assert learned_end == {"a + b\n": 1, "compute(": 0, "f()\n": 0, "oops": 1, "a - b": 1, "a * b\n": 0}
    (pair,) = [row for row in rows_of(dataset, "dpo") if row["prompt"] == typed_prompt]
    assert (
        pair["completion"] == "a * b\n" and pair["loss_mask"][-1] == 0 and pair["rejected_loss_mask"][-1] == 1
    )
