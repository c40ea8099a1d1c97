"""The records folder: concurrent appends, a SIGKILL mid-write, the size cap, hostile files, the join."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from tests.helpers.feedback import completion, stamp, verdict, write

from codetune.artifacts.records import RecordWriter, read_records
from codetune.errors import InputError


def test_rows_join_by_id_and_choice(tmp_path):
    rows = [
        completion("a", 0, text="x = 1\ny = 2\n", mean_logprob=-0.2, path="m.py", language="python"),
        completion("a", 0.5, index=1, text="x = 3\n"),
        completion("b", 1),
        completion("c", 2),
        completion("d", 3, text="first line\nsecond\n"),
        verdict("a", None, 4),
        verdict("a", True, 5, kept_text="x = 1\n"),
        verdict("a", False, 6, index=1),
        verdict("b", False, 7),
        verdict("d", True, 8, select_kind="line"),
    ]
    write(tmp_path, rows)
    records = read_records(tmp_path)
    labeled = {(item.completion.id, item.completion.index): item for item in records.labeled()}
    assert labeled["a", 0].accepted is True and labeled["a", 0].target == "x = 1\n" and labeled["a", 0].viewed
    assert labeled["a", 1].accepted is False
    assert labeled["b", 0].accepted is False
    assert labeled["c", 0].accepted is None and not labeled["c", 0].viewed
    # Tabby's partial accept (select_kind=line) keeps the first line only.
    assert labeled["d", 0].target == "first line\n"
    assert labeled["a", 0].completion.mean_logprob == -0.2
    summary = records.summary()
    assert (summary["accepted"], summary["rejected"], summary["no_feedback"]) == (2, 2, 1)
    assert summary["acceptance_rate"] == 0.5 and summary["problems"] == {}


def test_rows_go_to_the_file_of_their_day(tmp_path):
    write(tmp_path, [completion("a", 0), completion("b", 86400), verdict("a", True, 86401)])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["records-2026-07-01.jsonl", "records-2026-07-02.jsonl"]
    assert read_records(tmp_path).labeled()[0].accepted is True


WRITER = textwrap.dedent(
    """
    import sys, threading
    from codetune.artifacts.records import CompletionRecord, RecordWriter
    folder, name, threads, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    writer = RecordWriter(folder)
    def run(t):
        for i in range(rows):
            size = (i * 7919 + t * 104729) % 150_000  # some rows far over a pipe buffer (64 KiB)
            row = CompletionRecord(id=f"{name}-{t}-{i}", prefix="p" * size, text=str(i),
                                   time="2026-07-01T09:00:00.000+00:00")
            assert writer.append(row)
    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers: w.start()
    for w in workers: w.join()
    """
)


def test_threads_and_processes_never_interleave_rows(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"p{n}", "3", "25"]) for n in range(3)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    records = read_records(tmp_path)
    assert records.counts == {}
    assert len(records.completions) == 3 * 3 * 25
    for (ident, _), row in records.completions.items():
        i = int(ident.rsplit("-", 1)[1])
        assert row.text == str(i)
        t = int(ident.split("-")[1])
        assert len(row.prefix) == (i * 7919 + t * 104729) % 150_000


KILLED = textwrap.dedent(
    """
    import sys
    from codetune.artifacts.records import CompletionRecord, RecordWriter
    writer = RecordWriter(sys.argv[1])
    i = 0
    while True:
        writer.append(CompletionRecord(id=f"row-{i}", prefix="x" * 3_000_000, text=str(i),
                                       time="2026-07-01T09:00:00.000+00:00"))
        i += 1
    """
)


def test_kill_9_mid_write_loses_at_most_the_row_being_written(tmp_path):
    """A writer SIGKILLed while appending 3 MB rows: every earlier row reads back intact, the torn
    one (if the kill cut it) is one malformed line, and the next writer's rows are whole."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path)])
    file = tmp_path / "records-2026-07-01.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not file.exists() or file.stat().st_size < 12_000_000):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert file.stat().st_size >= 12_000_000
    write(tmp_path, [completion("after-kill", 0, text="still whole")])
    records = read_records(tmp_path)
    written = sorted(int(i.split("-")[1]) for i, _ in records.completions if i.startswith("row-"))
    assert written == list(range(len(written))) and len(written) >= 3
    assert all(records.completions[f"row-{i}", 0].text == str(i) for i in written)
    assert records.counts["malformed_row"] <= 1
    assert records.completions["after-kill", 0].text == "still whole"


CUT_SHORT = textwrap.dedent(
    """
    import resource, signal, sys
    from codetune.artifacts.records import CompletionRecord, RecordWriter
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; the kernel's default kills
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
    writer = RecordWriter(sys.argv[1])
    for i in range(100):
        writer.append(CompletionRecord(id=f"row-{i}", prefix="x" * 100_000, text=str(i),
                                       time="2026-07-01T09:00:00.000+00:00"))
    """
)


def test_a_writer_killed_inside_its_write_tears_one_row_only(tmp_path):
    """The file size limit makes the kernel cut a write short and kill the writer (SIGXFSZ) in the
    middle of a row, every time: the rows before it and the next writer's rows stay whole."""
    proc = subprocess.run([sys.executable, "-c", CUT_SHORT, str(tmp_path), "450000"], timeout=60)
    assert proc.returncode == -signal.SIGXFSZ
    file = tmp_path / "records-2026-07-01.jsonl"
    assert file.stat().st_size == 450_000 and not file.read_bytes().endswith(b"\n")
    write(tmp_path, [completion("next", 0, text="whole")])
    records = read_records(tmp_path)
    assert sorted(records.completions) == [("next", 0), *((f"row-{i}", 0) for i in range(4))]
    assert records.counts == {"malformed_row": 1}


def test_a_torn_last_row_is_closed_before_the_next_one(tmp_path):
    write(tmp_path, [completion("a", 0)])
    file = next(tmp_path.iterdir())
    with file.open("ab") as handle:
        handle.write(b'{"type": "completion", "id": "torn", "pre')
    write(tmp_path, [completion("b", 1), verdict("b", True, 2)])
    records = read_records(tmp_path)
    assert set(records.completions) == {("a", 0), ("b", 0)}
    assert records.counts["malformed_row"] == 1
    assert records.labeled()[1].accepted is True


def test_size_cap_stops_new_rows_and_counts_them(tmp_path):
    row_bytes = len(json.dumps(completion("x" * 10, 0).row(), separators=(",", ":"))) + 1
    writer = RecordWriter(tmp_path, max_bytes=row_bytes * 3 + 10)
    kept = [writer.append(completion(f"{n:010d}", n)) for n in range(5)]
    writer.close()
    assert kept == [True, True, True, False, False] and writer.dropped == 2
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= row_bytes * 3 + 10
    # A second writer sees the bytes already there (another process, a restart).
    again = RecordWriter(tmp_path, max_bytes=row_bytes * 3 + 10)
    assert again.append(completion("late", 9)) is False


def test_rotate_removes_the_oldest_days_to_keep_recording(tmp_path, caplog):
    day = 24 * 3600
    row_bytes = len(json.dumps(completion("x" * 10, 0).row(), separators=(",", ":"))) + 1
    cap = row_bytes * 3 + 10
    writer = RecordWriter(tmp_path, max_bytes=cap, when_full="rotate")
    with caplog.at_level("WARNING", logger="codetune.artifacts.records"):
        kept = [writer.append(completion(f"{n:010d}", n * day)) for n in range(5)]
    writer.close()
    assert kept == [True] * 5 and writer.dropped == 0 and writer.rotated == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "records-2026-07-03.jsonl",
        "records-2026-07-04.jsonl",
        "records-2026-07-05.jsonl",
    ]
    assert (
        "removed records-2026-07-01.jsonl" in caplog.text
        and "removed records-2026-07-02.jsonl" in caplog.text
    )
    assert [c.id for c in read_records(tmp_path).completions.values()] == [f"{n:010d}" for n in (2, 3, 4)]
    # The day being written is never removed: when it alone fills the cap, new rows stop (counted).
    again = RecordWriter(tmp_path, max_bytes=cap, when_full="rotate")
    assert [again.append(completion(f"late{n:06d}", 4 * day + n)) for n in range(4)] == [
        True,
        True,
        False,
        False,
    ]
    assert again.dropped == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["records-2026-07-05.jsonl"]


def test_rotate_never_follows_a_planted_link_or_removes_what_is_not_a_day_file(tmp_path):
    """Rotation removes only the folder's own day-files: a link named as the oldest day (pointing out
    of the folder) and a folder named as a day are left alone, and the file outside is untouched."""
    day = 24 * 3600
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n" * 1000)
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "records-2000-01-01.jsonl").symlink_to(outside)
    (folder / "records-2000-01-02.jsonl").mkdir()
    row_bytes = len(json.dumps(completion("x" * 10, 0).row(), separators=(",", ":"))) + 1
    writer = RecordWriter(folder, max_bytes=row_bytes * 2 + 10, when_full="rotate")
    kept = [writer.append(completion(f"{n:010d}", n * day)) for n in range(4)]
    writer.close()
    assert kept == [True] * 4 and writer.rotated == 2
    assert outside.read_text() == "precious\n" * 1000
    assert (folder / "records-2000-01-01.jsonl").is_symlink() and (
        folder / "records-2000-01-02.jsonl"
    ).is_dir()
    assert sorted(p.name for p in folder.glob("records-2026-*")) == [
        "records-2026-07-03.jsonl",
        "records-2026-07-04.jsonl",
    ]


def test_bad_rows_are_counted_never_fatal(tmp_path):
    write(tmp_path, [completion("good", 0), verdict("good", True, 1)])
    lines = [
        "not json",
        "[1, 2]",
        json.dumps({"type": "completion", "id": "x", "time": stamp(0), "prefix": "a"}),  # no text
        json.dumps({"type": "completion", "id": "y", "time": "yesterday", "prefix": "a", "text": "b"}),
        json.dumps({"type": "completion", "id": "z", "time": stamp(0), "prefix": 1, "text": "b"}),
        json.dumps(
            {"type": "completion", "id": "i", "index": True, "time": stamp(0), "prefix": "", "text": ""}
        ),
        json.dumps(
            {"type": "feedback", "id": "good", "time": stamp(2), "event": "select", "accepted": "yes"}
        ),
        json.dumps({"type": "surprise", "id": "good"}),
        json.dumps(completion("good", 5, text="again").row()),  # duplicate id: the first is kept
        json.dumps(verdict("never-served", True).row()),
        "[" * 3000,  # deep nesting
    ]
    extra = tmp_path / "records-2026-07-02.jsonl"
    extra.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe\n" + b"y" * 5000 + b"\n")
    (tmp_path / "records-2026-06-29.jsonl").symlink_to("/etc/passwd")
    (tmp_path / "notes.txt").write_text("not a records file")
    records = read_records(tmp_path, max_line_bytes=4096)
    assert set(records.completions) == {("good", 0)} and records.completions["good", 0].text == "a + b"
    assert records.labeled()[0].accepted is True
    assert records.counts == {
        "malformed_row": 10,
        "duplicate_completion": 1,
        "feedback_for_unknown_id": 1,
        "oversized_row": 1,
        "skipped_not_regular_file": 1,
    }


def test_missing_records_and_links_for_todays_file(tmp_path):
    with pytest.raises(InputError, match="records not found"):
        read_records(tmp_path / "nope")
    (tmp_path / "records-2026-07-01.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(InputError, match="a link"):
        RecordWriter(tmp_path).append(completion("a", 0))
    assert not (tmp_path / "elsewhere.jsonl").exists()
    assert os.stat(tmp_path).st_mode & 0o777  # the folder is still there, untouched


def test_records_files_are_private(tmp_path):
    write(tmp_path / "records", [completion("a", 0)])
    assert (tmp_path / "records").stat().st_mode & 0o777 == 0o700
    assert next((tmp_path / "records").iterdir()).stat().st_mode & 0o777 == 0o600
