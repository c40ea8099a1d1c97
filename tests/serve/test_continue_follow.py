"""`serve --record DIR --continue-log FILE`: Continue's autocomplete dev-data file followed while the
server runs. Each line Continue appends (its real shape: tests/feedback/test_events.py) joins the
suggestion this server made for it, or is kept as Continue's own; a partial line waits for its newline;
a truncated, replaced or linked file is handled; a restart imports nothing twice."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest
from tests.helpers.cli import assert_clean_error, run_cli
from tests.helpers.feedback import CONTINUE_0_2_0

from codetune.artifacts.records import read_records

PREFIX = "import math\n\n\ndef area(radius):\n    return math.pi * "
SUFFIX = "\n\n\nprint(area(2.0))\n"


def outcome(ident: str, completion: str, accepted: bool, prefix: str = PREFIX, suffix: str = SUFFIX) -> bytes:
    """One line as Continue's DataLogger appends it (JSON.stringify + newline)."""
    row = {**CONTINUE_0_2_0, "completionId": ident, "prefix": prefix, "suffix": suffix}
    row |= {"completion": completion, "accepted": accepted}
    return (json.dumps(row) + "\n").encode()


def append(path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def counts(server) -> dict:
    return httpx.get(server.url + "/admin/records", timeout=30).json()["counts"]


def wait_for(server, **expected) -> dict:
    """The server's counts once every ``expected`` count is reached (the follower polls the file)."""
    deadline = time.monotonic() + 30
    while True:
        now = counts(server)
        if all(now.get(f"continue_{name}", 0) >= value for name, value in expected.items()):
            return now
        assert time.monotonic() < deadline, f"waited for {expected}, have {now}"
        time.sleep(0.05)


def suggest(server, prefix: str = PREFIX) -> dict:
    body = {"prompt": prefix, "suffix": SUFFIX, "max_tokens": 6, "temperature": 0, "filepath": "geo.py"}
    answer = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
def follow(launch, tmp_path):
    started = []
    start, stop = launch
    log = tmp_path / "dev_data" / "autocomplete.jsonl"
    log.parent.mkdir()

    def run(**options):
        server = start(record=tmp_path / "records", continue_log=log, continue_poll_s=0.05, **options)
        started.append(server)
        return server

    yield run, log, tmp_path / "records"
    for server in started:
        stop(server)


def test_lines_appended_after_start_join_their_suggestions(follow, launch):
    run, log, folder = follow
    server = run()  # Continue has written nothing yet: the file appears later
    served = suggest(server)
    text = served["choices"][0]["text"]
    assert text.strip(), "the tiny model answered nothing to join"
    # Continue trims what it shows (postprocessing): its completion is the start of the served text.
    append(log, outcome("cont-1", text.rstrip(), accepted=True))
    append(log, outcome("cont-2", "never served", accepted=False, prefix="x = "))
    append(log, b"{broken\n")
    half = outcome("cont-3", "y + 1", accepted=True, prefix="y = ")
    append(log, half[:20])  # Continue is mid-write: this line waits for its newline
    now = wait_for(server, joined=1, imported=1, malformed=1)
    time.sleep(0.3)  # several more polls: the partial line is still not taken
    assert counts(server) == now
    records = read_records(folder)
    verdicts = {(item.completion.id, item.completion.source): item.accepted for item in records.labeled()}
    assert verdicts == {(served["id"], "serve"): True, ("cont-2", "continue"): False}
    joined = records.feedback[(served["id"], 0)]
    assert [(e.source, e.editor_id) for e in joined] == [("continue", "cont-1")]
    append(log, half[20:])
    wait_for(server, imported=2)
    assert read_records(folder).completions[("cont-3", 0)].prefix == "y = "

    # A restart resumes where the last server stopped: the old lines are not imported again.
    launch[1](server)
    append(log, outcome("cont-4", "z", accepted=False, prefix="z = "))
    again = run()
    now = wait_for(again, imported=1)
    time.sleep(0.3)
    assert {k: v for k, v in counts(again).items() if k.startswith("continue_")} == {"continue_imported": 1}
    records = read_records(folder)
    assert len(records.completions) == 4 and not records.counts
    assert len(records.feedback[(served["id"], 0)]) == 1

    # Continue's file deleted and written anew (same names inside): only the new line is imported.
    fresh = log.with_name("fresh.jsonl")
    fresh.write_bytes(
        outcome("cont-2", "never served", accepted=False, prefix="x = ")
        + outcome("cont-5", "w", True, "w = ")
    )
    os.replace(fresh, log)
    wait_for(again, imported=2, already_imported=1, replaced=1)
    # Truncated in place (a user emptied it) and written again.
    log.write_bytes(outcome("cont-6", "v", False, "v = "))
    wait_for(again, imported=3, truncated=1)
    records = read_records(folder)
    assert len(records.completions) == 6 and not records.counts


def test_hostile_files_are_counted_never_followed(follow, tmp_path):
    run, log, folder = follow
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_bytes(outcome("secret", "never import me", True, "s = "))
    server = run()
    huge = outcome("huge", "x" * (17 * 1024 * 1024), True, "h = ")
    append(log, huge + outcome("after-huge", "ok", True, "o = "))
    wait_for(server, imported=1, oversized_line=1)
    # The file swapped for a link to a file elsewhere: not read through.
    os.remove(log)
    os.symlink(outside, log)
    wait_for(server, refused_link=1)
    time.sleep(0.3)
    # A last line that never gets its newline is never taken, and holds nothing up.
    os.remove(log)
    log.write_bytes(
        outcome("done", "1", True, "d = ") + outcome("unfinished", "2", True, "u = ").rstrip(b"\n")
    )
    wait_for(server, imported=2)
    time.sleep(0.3)
    ids = {c.id for c in read_records(folder).completions.values()}
    assert ids == {"after-huge", "done"}


def test_a_link_or_a_missing_record_folder_is_one_error_line(tmp_path):
    target = tmp_path / "real.jsonl"
    target.write_text("")
    link = tmp_path / "autocomplete.jsonl"
    link.symlink_to(target)
    model = ("serve", "--model", "tiny-gpt-bigcode")
    assert_clean_error(run_cli(*model, "--record", str(tmp_path / "r"), "--continue-log", str(link)), "link")
    assert_clean_error(run_cli(*model, "--continue-log", str(target)), "--record")
