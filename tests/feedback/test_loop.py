"""The loop end to end on a tiny preset: a developer types through `codetune serve --record`, the
editor posts its events, `build --format feedback` and `train --method kto` learn from them, `eval
--task acceptance` replays the records, and the new adapter is rolled out into the running server."""

from __future__ import annotations

import json

import httpx
from tests.helpers.cli import assert_clean_error, run_cli
from tests.helpers.server import start_server, stop_server

from codetune.artifacts.records import read_records, typed_after
from codetune.dataset.builder import build
from codetune.dataset.config import BuildConfig
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.runner import evaluate
from codetune.train.config import TrainConfig
from codetune.train.recipe import train

BASE = "tiny-gpt-bigcode"
SOURCE = '''import math


def area(radius):
    """The area of a circle."""
    return math.pi * radius ** 2


def perimeter(radius):
    """The perimeter of a circle."""
    return 2 * math.pi * radius


def describe(radius):
    return f"r={radius}: area {area(radius):.2f}, perimeter {perimeter(radius):.2f}"
'''
REGION = (SOURCE.index("def area"), SOURCE.index("def describe"))


def cursors(text: str, start: int, end: int) -> list[int]:
    """Where the developer pauses while typing text[start:end]: after each word and each line's indent."""
    points = []
    for at in range(start + 1, end):
        before, after = text[at - 1], text[at]
        if (before.isalnum() or before == "_") != (after.isalnum() or after == "_") and after != "\n":
            points.append(at)
    return points


def test_record_events_build_train_eval_and_swap(tmp_path):
    folder = tmp_path / "records"
    server = start_server(record=folder, adapter_dir=tmp_path)
    try:
        suffix = SOURCE[REGION[1] :]  # the code below the function being written: the same all along
        answers = []
        for n, at in enumerate(cursors(SOURCE, *REGION)):
            segments = {"prefix": SOURCE[:at], "suffix": suffix, "filepath": "geometry.py"}
            body = {"language": "python", "segments": segments}
            answer = httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()
            answers.append(answer)
            # A tiny random model is never right: the developer takes every third suggestion anyway.
            event = {
                "type": "select" if n % 3 == 0 else "dismiss",
                "completion_id": answer["id"],
                "choice_index": 0,
            }
            assert httpx.post(server.url + "/v1/events", json=event, timeout=30).status_code == 200
        unknown = {"type": "select", "completion_id": "cmpl-from-another-server", "choice_index": 0}
        assert httpx.post(server.url + "/v1/events", json=unknown, timeout=30).status_code == 200
        records = read_records(folder)
        assert len(records.completions) == len(answers) and not records.counts  # the unknown id was not kept

        build(
            BuildConfig(
                corpus=folder,
                format="feedback",
                model=BASE,
                out=tmp_path / "ds",
                max_length=128,
                valid_fraction=0.2,
                test_fraction=0,
            )
        )
        stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
        decided = [
            item for item in records.labeled() if item.accepted is not None and item.completion.text.strip()
        ]
        labeled = records.labeled()
        typed = {
            (labeled[i].completion.prefix, line)
            for i, line in typed_after(labeled).items()
            if labeled[i].accepted is not True
        }
        assert typed, "the developer's typing left no finished line in the records"
        targets = stats["targets"]
        assert stats["objectives"]["kto"] == sum(targets.values()) and targets["typed"] == len(typed)
        assert targets["accepted"] + targets["rejected"] <= len(decided)
        run = tmp_path / "run"
        train(
            TrainConfig(
                model=BASE,
                dataset=tmp_path / "ds",
                method="kto",
                out=run,
                max_steps=3,
                batch_size=4,
                lr=5e-3,
                eval_every=3,
            )
        )

        evaluate(
            EvalConfig(
                models=[f"base={BASE}", f"kto={run}"],
                tasks=["acceptance"],
                records=folder,
                out=tmp_path / "report",
                language="python",
                max_new_tokens=16,
            )
        )
        report = json.loads((tmp_path / "report" / "report.json").read_text())
        scores = report["tasks"]["acceptance"]["models"]
        references = typed_after(read_records(folder).labeled())
        assert report["tasks"]["acceptance"]["prompts"] == len(references) + sum(
            1
            for i, item in enumerate(read_records(folder).labeled())
            if item.accepted and i not in references
        )
        # The base replays exactly what the server sent back then (the first line an editor shows).
        served = {c.id: c.text.split("\n", 1)[0] for c in records.completions.values()}
        lines = (tmp_path / "report" / "predictions.jsonl").read_text().splitlines()
        predictions = [json.loads(line) for line in lines]
        base = [p for p in predictions if p["model"] == "base"]
        assert base and all(p["prediction"] == served[p["id"]] for p in base)
        assert scores["base"]["accepted"] == scores["base"]["recorded_accepted"]
        assert set(scores["kto"]) >= {"accepted", "acceptance_rate", "accepted_chars", "shown"}

        swapped = httpx.post(
            server.url + "/admin/adapters", json={"name": BASE, "path": str(run)}, timeout=120
        )
        assert swapped.status_code == 200, swapped.text
        item = next(p for p in predictions if p["model"] == "kto" and p["prediction"])
        body = {
            "language": "python",
            "segments": {"prefix": item["prefix"], "suffix": item["suffix"], "filepath": "geometry.py"},
        }
        answer = httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()
        assert answer["choices"][0]["text"].split("\n", 1)[0] == item["prediction"]
        assert read_records(folder).completions[(answer["id"], 0)].adapter == str(run / "adapter")
    finally:
        stop_server(server)


def test_bad_records_are_counted_or_one_error_line(tmp_path):
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "records-2026-07-01.jsonl").write_text(
        '{"type": "completion", "id": "a", "prefix": "x = ", "text": "1", "time": "2026-07-01T09:00:00+00:00"}\n'
        "not json\n"
        '{"type": "feedback", "id": "ghost", "event": "select", "accepted": true, "time": "2026-07-01T09:00:01Z"}\n'
    )
    # No feedback at all: build and eval each say so in one line.
    assert_clean_error(
        run_cli("build", str(folder), "--format", "feedback", "--model", BASE, "--out", str(tmp_path / "ds")),
        "no feedback",
    )

    def replay(records):
        return run_cli("eval", "--model", BASE, "--task", "acceptance", "--records", str(records),
                       "--out", str(tmp_path / "report"))  # fmt: skip

    assert_clean_error(replay(folder), "nothing of what developers kept or typed")
    counts = read_records(folder).counts
    assert (counts["malformed_row"], counts["feedback_for_unknown_id"]) == (1, 1)
    assert_clean_error(replay(tmp_path / "missing"), "records not found")
