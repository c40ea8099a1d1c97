"""The feedback loop's routes attacked: hostile bodies to /v1/events and /v1/feedback, one client's
flood of events, a link planted in the records folder, and adapter swaps from outside the folder the
server may load them from (links out of it, pickle weights)."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from tests.helpers.server import make_run

from codetune.artifacts.paths import records_file_name
from codetune.artifacts.records import read_records

BASE = "tiny-gpt-bigcode"
KEY = "attack-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def post(url, path, body, timeout=60):
    return httpx.post(url + path, json=body, headers=AUTH, timeout=timeout)


def suggest(url, prefix="def add(a, b):\n    return "):
    answer = post(url, "/v1/completions", {"language": "python", "segments": {"prefix": prefix}})
    assert answer.status_code == 200, answer.text
    return answer.json()


def counts(url):
    return httpx.get(url + "/admin/records", headers=AUTH, timeout=30).json()["counts"]


def test_hostile_bodies_and_a_flood_of_events_cannot_fill_the_records(launch, tmp_path):
    """One client repeating events about its suggestion fills no more than a few rows: the size cap is
    left for everyone's suggestions. Bodies too big, not JSON or not an object are refused, unwritten."""
    start, stop = launch
    folder = tmp_path / "records"
    server = start(record=folder, api_key=KEY, record_max_bytes=40_000)
    try:
        first = suggest(server.url)
        event = {"type": "view", "completion_id": first["id"], "choice_index": 0}
        for _ in range(150):
            assert post(server.url, "/v1/events", event).status_code == 200
        feedback = {"id": first["id"], "accepted": True, "kept_text": "a + b"}
        answers = [post(server.url, "/v1/feedback", feedback).json() for _ in range(20)]
        assert answers[-1]["recorded"] is False and "events" in answers[-1]["reason"]
        for body in (b"{not json", b"[1, 2]", b'"text"', b"{" * 100_000):
            refused = httpx.post(
                server.url + "/v1/events",
                content=body,
                headers={**AUTH, "content-type": "application/json"},
                timeout=30,
            )
            assert refused.status_code == 400, body[:20]
        huge = {**feedback, "kept_text": "x" * 2_000_000}
        assert post(server.url, "/v1/feedback", huge).status_code == 413
        second = suggest(server.url, "import os\n\nprint(")
        records = read_records(folder)
        assert (second["id"], 0) in records.completions  # the flood left room for it
        assert len(records.feedback[(first["id"], 0)]) <= 8
        assert counts(server.url)["events_over_limit"] >= 150 + 20 - 8
    finally:
        stop(server)


def test_a_link_planted_as_the_days_file_is_not_written_through(launch, tmp_path):
    """The suggestion is still served; the link's target is untouched; the failure is counted."""
    start, stop = launch
    folder, outside = tmp_path / "records", tmp_path / "precious.txt"
    folder.mkdir()
    outside.write_text("keep me\n")
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    (folder / records_file_name(today)).symlink_to(outside)
    server = start(record=folder, api_key=KEY)
    try:
        answer = suggest(server.url)
        assert answer["choices"][0]["text"] is not None
        assert outside.read_text() == "keep me\n"
        assert counts(server.url)["record_write_failed"] == 1
    finally:
        stop(server)


@pytest.fixture(scope="module")
def allowed(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    make_run(root / "good", seed=3)
    return root


def swap(url, path, name=BASE):
    return post(url, "/admin/adapters", {"name": name, "path": str(path)}, timeout=120)


def test_swaps_load_from_the_adapter_folder_only(allowed, launch, tmp_path):
    start, stop = launch
    outside = make_run(tmp_path / "outside", seed=5)
    (allowed / "link-out").symlink_to(outside, target_is_directory=True)
    linked_weights = allowed / "linked-weights"
    (linked_weights / "adapter").mkdir(parents=True)
    (linked_weights / "manifest.json").write_text((outside / "manifest.json").read_text())
    for item in (outside / "adapter").iterdir():
        (linked_weights / "adapter" / item.name).symlink_to(item)
    pickled = make_run(allowed / "pickled", seed=6)
    weights = pickled / "adapter" / "adapter_model.safetensors"
    weights.rename(weights.with_name("adapter_model.bin"))

    server = start(model=BASE, api_key=KEY, adapter_dir=allowed)
    try:
        for path in (
            outside,
            allowed / "link-out",
            linked_weights,
            allowed / ".." / tmp_path.name / "outside",
        ):
            refused = swap(server.url, path)
            assert refused.status_code == 400, path
            assert "outside --adapter-dir" in refused.json()["error"]["message"], path
        refused = swap(server.url, "pickled")
        assert refused.status_code == 400 and "safetensors" in refused.json()["error"]["message"]
        assert swap(server.url, "good").status_code == 200  # a name inside the folder
        assert swap(server.url, allowed / "good", name="good").status_code == 200
    finally:
        stop(server)
    closed = start(model=BASE, api_key=KEY)
    try:
        refused = swap(closed.url, allowed / "good")
        assert refused.status_code == 403 and "--adapter-dir" in refused.json()["error"]["message"]
    finally:
        stop(closed)
