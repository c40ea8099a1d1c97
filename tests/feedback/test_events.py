"""Editor feedback payloads as editors really send them: tabby-agent's /v1/events, the generic
feedback body, and Continue's autocomplete dev-data lines (shapes from their sources, docs/editors.md)."""

from __future__ import annotations

import json

import pytest
from tests.helpers.feedback import CONTINUE_0_1_0, CONTINUE_0_2_0, completion, write

from codetune.artifacts.records import RecordWriter, read_records
from codetune.errors import InputError
from codetune.feedback.continue_dev import continue_records, import_continue
from codetune.feedback.events import EventError, generic_feedback, tabby_event

CMPL = "cmpl-2b6ee5dc-5b1a-4c0f-9a57-e0d1b1f3c4a1"
VIEW = f"view-{CMPL.removeprefix('cmpl-')}-at-1719820800000"


# tabby-agent codeCompletion/index.ts postEvent: {type, select_kind, completion_id, choice_index, view_id,
# elapsed}; JSON.stringify drops the undefined ones. select_kind also goes in the query string.
@pytest.mark.parametrize(
    ("body", "query", "accepted", "select_kind"),
    [
        ({"type": "view", "completion_id": CMPL, "choice_index": 0, "view_id": VIEW}, {}, None, None),
        (
            {"type": "select", "completion_id": CMPL, "choice_index": 0, "view_id": VIEW, "elapsed": 1834},
            {},
            True,
            None,
        ),
        (
            {
                "type": "select",
                "select_kind": "line",
                "completion_id": CMPL,
                "choice_index": 0,
                "view_id": VIEW,
                "elapsed": 912,
            },
            {"select_kind": "line"},
            True,
            "line",
        ),
        (
            {"type": "dismiss", "completion_id": CMPL, "choice_index": 0, "view_id": VIEW, "elapsed": 10021},
            {},
            False,
            None,
        ),
        # Tabby's server reads select_kind from the query string only; the body may lack it.
        ({"type": "select", "completion_id": CMPL, "choice_index": 1}, {"select_kind": "line"}, True, "line"),
    ],
)
def test_tabby_agent_events(body, query, accepted, select_kind):
    record = tabby_event(json.loads(json.dumps(body)), query)
    assert (record.id, record.accepted, record.select_kind, record.source) == (
        CMPL,
        accepted,
        select_kind,
        "tabby",
    )
    assert record.event == body["type"] and record.index == body["choice_index"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"type": "accept", "completion_id": CMPL, "choice_index": 0}, "'type' must be one of"),
        ({"type": "view", "choice_index": 0}, "completion_id"),
        ({"type": "view", "completion_id": CMPL}, "choice_index"),
        ({"type": "view", "completion_id": CMPL, "choice_index": -1}, "choice_index"),
        ({"type": "view", "completion_id": CMPL, "choice_index": True}, "choice_index"),
        ({"type": "view", "completion_id": CMPL, "choice_index": "0"}, "choice_index"),
        ({"type": "view", "completion_id": "x" * 300, "choice_index": 0}, "longer than"),
        ({"type": "dismiss", "completion_id": CMPL, "choice_index": 0, "elapsed": 1.5}, "elapsed"),
    ],
)
def test_tabby_events_tabby_would_refuse(body, message):
    with pytest.raises(EventError, match=message):
        tabby_event(body)


def test_tabby_ignores_fields_it_does_not_know():
    """Tabby's server deserialises with serde and no deny_unknown_fields: a newer agent's extra field is fine."""
    record = tabby_event({"type": "dismiss", "completion_id": CMPL, "choice_index": 0, "future": 1})
    assert record.accepted is False


def test_generic_feedback():
    record = generic_feedback({"id": "cmpl-1", "accepted": True, "kept_text": "return a"})
    assert (record.id, record.accepted, record.kept_text, record.event) == (
        "cmpl-1",
        True,
        "return a",
        "accept",
    )
    assert generic_feedback({"id": "cmpl-1", "accepted": False, "index": 2}).index == 2
    for body, message in [
        ({"id": "cmpl-1"}, "accepted"),
        ({"id": "cmpl-1", "accepted": 1}, "accepted"),
        ({"accepted": True}, "'id'"),
        ({"id": "cmpl-1", "accepted": True, "kept": "x"}, "unknown field"),
        ({"id": "cmpl-1", "accepted": False, "kept_text": "x"}, "accepted: true"),
        ({"id": "cmpl-1", "accepted": True, "kept_text": "x" * 1_000_001}, "kept_text"),
        ("cmpl-1", "JSON object"),
    ]:
        with pytest.raises(EventError, match=message):
            generic_feedback(body)


def test_events_join_their_completions_and_unknown_ids_are_counted(tmp_path):
    write(tmp_path, [completion(CMPL, 0, text="a + b\n    # done\n"), completion("cmpl-2", 0)])
    with RecordWriter(tmp_path) as writer:
        writer.append(tabby_event({"type": "view", "completion_id": CMPL, "choice_index": 0}))
        writer.append(
            tabby_event({"type": "select", "completion_id": CMPL, "choice_index": 0}, {"select_kind": "line"})
        )
        writer.append(generic_feedback({"id": "cmpl-2", "accepted": False}))
        writer.append(generic_feedback({"id": "cmpl-unknown", "accepted": True}))
        writer.append(tabby_event({"type": "dismiss", "completion_id": CMPL, "choice_index": 3}))
    records = read_records(tmp_path)
    verdicts = {item.completion.id: (item.accepted, item.target) for item in records.labeled()}
    assert verdicts == {CMPL: (True, "a + b\n"), "cmpl-2": (False, "a + b")}
    assert records.counts == {"feedback_for_unknown_id": 2}


def test_continue_lines_of_both_schema_versions():
    done, said = continue_records(CONTINUE_0_2_0)
    assert (done.prefix, done.suffix, done.text) == (
        CONTINUE_0_2_0["prefix"],
        "\n\nprint(area(2))\n",
        "3.14159 * r * r",
    )
    assert (done.path, done.language, done.latency_ms) == (
        "/home/dev/geometry/shapes v2/area.py",
        "python",
        412.0,
    )
    assert (done.model, done.client, done.source) == ("codetune", CONTINUE_0_2_0["userAgent"], "continue")
    assert said is not None and said.accepted is True and said.id == done.id
    old, said = continue_records(CONTINUE_0_1_0)
    assert old.language == "kotlin" and old.client == "continue" and said.accepted is False
    _, none = continue_records({k: v for k, v in CONTINUE_0_2_0.items() if k != "accepted"})
    assert none is None


def test_import_continue_file_into_records(tmp_path):
    source = tmp_path / "autocomplete.jsonl"
    chat = {"eventName": "chatInteraction", "prompt": "hi", "completion": "hello"}
    lines = [CONTINUE_0_2_0, CONTINUE_0_1_0, {**CONTINUE_0_2_0, "completionId": "c3", "accepted": None}, chat]
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n{broken\n", encoding="utf-8")
    counts = import_continue(source, tmp_path / "records")
    assert counts == {
        "imported": 3,
        "accepted": 1,
        "rejected": 1,
        "no_feedback": 1,
        "already_imported": 0,
        "malformed": 1,
        "not_autocomplete": 1,
        "dropped_by_size_cap": 0,
    }
    records = read_records(tmp_path / "records")
    assert {item.completion.id: item.accepted for item in records.labeled()} == {
        CONTINUE_0_1_0["completionId"]: False,
        CONTINUE_0_2_0["completionId"]: True,
        "c3": None,
    }
    # Each row lands in the file of its own day.
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == [
        "records-2026-06-30.jsonl",
        "records-2026-07-01.jsonl",
    ]
    # Importing again (the file grew by a line) adds only the new line.
    with source.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({**CONTINUE_0_2_0, "completionId": "c4", "accepted": False}) + "\n")
    again = import_continue(source, tmp_path / "records")
    assert (again["imported"], again["already_imported"]) == (1, 3)
    assert read_records(tmp_path / "records").counts == {}


def test_import_continue_refuses_what_is_not_dev_data(tmp_path):
    source = tmp_path / "chat.jsonl"
    source.write_text(json.dumps({"eventName": "chatInteraction"}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="no autocomplete outcomes"):
        import_continue(source, tmp_path / "records")
    assert not (tmp_path / "records").exists()  # nothing half-written
    with pytest.raises(InputError, match="not found"):
        import_continue(tmp_path / "missing.jsonl", tmp_path / "records")


def test_records_cli_imports_continue_and_reports(tmp_path, cli):
    source = tmp_path / "autocomplete.jsonl"
    source.write_text(json.dumps(CONTINUE_0_2_0) + "\n" + json.dumps(CONTINUE_0_1_0) + "\n", encoding="utf-8")
    done = cli("records", "import-continue", str(source), "--out", str(tmp_path / "records"))
    assert done.returncode == 0, done.stderr
    assert "imported" in done.stderr
    stats = cli("records", "stats", str(tmp_path / "records"), "--json")
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    assert (report["completions"], report["accepted"], report["rejected"], report["acceptance_rate"]) == (
        2,
        1,
        1,
        0.5,
    )
    # Continue logs no log-probabilities: a threshold cannot be fitted, and says so in one line.
    from tests.helpers.cli import assert_clean_error

    assert_clean_error(cli("records", "stats", str(tmp_path / "records"), "--keep-accepted", "0.9"), "have 0")
