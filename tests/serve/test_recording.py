"""`serve --record DIR`: every protocol's suggestions kept under the id its client saw, editor events
(`/v1/events` as tabby-agent posts them, `/v1/feedback`) joined to them, `--min-confidence` answering
weak suggestions empty, and nothing answered lost when the server is killed (-9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest
from tests.helpers.cli import assert_clean_error, free_port, run_cli
from tests.helpers.feedback import completion, guessed_history, verdict, write

from codetune.artifacts.records import read_records
from codetune.feedback.confidence import fit_gate

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PREFIX = "import math\n\n\ndef area(radius):\n    return math.pi * "
SUFFIX = "\n\n\nprint(area(2.0))\n"
# tabby-agent's own User-Agent shape (clients/tabby-agent: `${name}/${version} ...`).
TABBY_AGENT = "tabby-agent/1.7.0 vscode/1.90.0"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("records")


@pytest.fixture(scope="module")
def server(folder, launch):
    start, stop = launch
    running = start(record=folder, api_key=KEY)
    yield running
    stop(running)


def post(server, path, body, headers=AUTH, **kw):
    return httpx.post(server.url + path, json=body, headers=headers, timeout=60, **kw)


def tabby(server, prefix=PREFIX, suffix=SUFFIX, path="src/geometry.py"):
    body = {"language": "python", "segments": {"prefix": prefix, "suffix": suffix, "filepath": path}}
    answer = post(server, "/v1/completions", body, headers={**AUTH, "User-Agent": TABBY_AGENT})
    assert answer.status_code == 200, answer.text
    return answer.json()


def recorded(folder):
    return read_records(folder).completions


def test_each_protocol_records_the_id_and_text_its_client_got(server, folder):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    sdk = client.completions.create(
        model="codetune",
        prompt=PREFIX,
        suffix=SUFFIX,
        max_tokens=6,
        temperature=0.8,
        seed=3,
        n=2,
        extra_body={"filepath": "pkg/geometry.py"},
    )
    assert sdk.choices[0].logprobs is None  # kept for the records, not sent to a client that did not ask
    tab = tabby(server)
    ollama_text = "".join(
        part["response"]
        for part in map(
            json.loads,
            post(
                server,
                "/api/generate",
                {"model": "codetune", "prompt": "x = [", "options": {"num_predict": 5}},
            )
            .text.strip()
            .splitlines(),
        )
    )
    infill = post(server, "/infill", {"input_prefix": "def f(", "input_suffix": "\n", "n_predict": 5}).json()
    records = recorded(folder)

    for choice in sdk.choices:
        record = records[(sdk.id, choice.index)]
        assert (record.text, record.prefix, record.suffix) == (choice.text, PREFIX, SUFFIX)
        assert (record.path, record.language, record.client) == (
            "pkg/geometry.py",
            "python",
            "OpenAI/Python " + openai.__version__,
        )
        assert record.finish_reason == choice.finish_reason and record.model == "tiny-gpt-bigcode"
        assert record.mean_logprob < 0 and record.latency_ms > 0 and not record.withheld
    record = records[(tab["id"], 0)]
    assert tab["id"].startswith("cmpl-") and record.text == tab["choices"][0]["text"]
    assert (record.path, record.client, record.language) == ("src/geometry.py", TABBY_AGENT, "python")
    # Protocols that show no id still record what they answered.
    by_prefix = {r.prefix: r for r in records.values()}
    assert by_prefix["x = ["].text == ollama_text and by_prefix["x = ["].suffix is None
    assert by_prefix["def f("].text == infill["content"] and by_prefix["def f("].suffix == "\n"
    # A chat answer is not a suggestion: not recorded.
    before = len(records)
    client.chat.completions.create(
        model="codetune", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert len(recorded(folder)) == before


def test_tabby_agent_events_join_their_completion_by_id(server, folder):
    shown, kept, dismissed = (tabby(server, prefix=PREFIX + s) for s in ("", "2", "r"))
    view_id = f"view-{shown['id'].removeprefix('cmpl-')}-at-1719820800000"
    # tabby-agent's postEvent bodies (codeCompletion/index.ts); select_kind in query and body.
    sent = [
        ("", {"type": "view", "completion_id": shown["id"], "choice_index": 0, "view_id": view_id}),
        (
            "",
            {
                "type": "select",
                "completion_id": shown["id"],
                "choice_index": 0,
                "view_id": view_id,
                "elapsed": 830,
            },
        ),
        (
            "?select_kind=line",
            {
                "type": "select",
                "select_kind": "line",
                "completion_id": kept["id"],
                "choice_index": 0,
                "elapsed": 402,
            },
        ),
        ("", {"type": "dismiss", "completion_id": dismissed["id"], "choice_index": 0, "elapsed": 10021}),
        ("", {"type": "select", "completion_id": "cmpl-never-served", "choice_index": 0}),
    ]
    for query, body in sent:
        answer = post(server, "/v1/events" + query, body)
        assert (answer.status_code, answer.text) == (200, "")  # Tabby's empty 200, unknown ids too
    verdicts = {item.completion.id: item for item in read_records(folder).labeled()}
    assert verdicts[shown["id"]].accepted is True and verdicts[dismissed["id"]].accepted is False
    assert verdicts[kept["id"]].target == kept["choices"][0]["text"].split("\n", 1)[0] + (
        "\n" if "\n" in kept["choices"][0]["text"] else ""
    )
    stats = httpx.get(server.url + "/admin/records", headers=AUTH, timeout=30).json()["counts"]
    assert stats["events_unknown_id"] == 1 and stats["events_select"] >= 2 and stats["events_dismiss"] >= 1
    # What Tabby's server refuses (another type, a missing id or index) is a 400; no key is a 401.
    for bad in (
        {"type": "accept", "completion_id": shown["id"], "choice_index": 0},
        {"type": "view", "choice_index": 0},
        {"type": "view", "completion_id": shown["id"]},
    ):
        assert post(server, "/v1/events", bad).status_code == 400, bad
    assert post(server, "/v1/events", sent[0][1], headers={}).status_code == 401


def test_generic_feedback_keeps_what_the_developer_kept(server, folder):
    answer = tabby(server, prefix=PREFIX + "(")
    body = {"id": answer["id"], "accepted": True, "kept_text": "radius ** 2)"}
    assert post(server, "/v1/feedback", body).json() == {"recorded": True}
    [item] = [i for i in read_records(folder).labeled() if i.completion.id == answer["id"]]
    assert item.accepted is True and item.target == "radius ** 2)"
    unknown = post(server, "/v1/feedback", {"id": "nope", "accepted": False}).json()
    assert unknown["recorded"] is False and "no suggestion" in unknown["reason"]
    refused = post(server, "/v1/feedback", {"id": answer["id"], "accepted": True, "extra": 1})
    assert refused.status_code == 400 and "extra" in refused.json()["error"]["message"]
    assert post(server, "/v1/feedback", body, headers={}).status_code == 401


def test_recording_is_off_by_default(launch):
    start, stop = launch
    running = start()
    try:
        tab = httpx.post(
            running.url + "/v1/completions", json={"segments": {"prefix": "x = ", "suffix": "\n"}}, timeout=60
        ).json()
        event = {"type": "select", "completion_id": tab["id"], "choice_index": 0}
        assert httpx.post(running.url + "/v1/events", json=event, timeout=30).status_code == 200
        stats = httpx.get(running.url + "/admin/records", timeout=30).json()
        assert stats == {"folder": None, "counts": {"events_not_recorded": 1}}
    finally:
        stop(running)


def test_min_confidence_auto_withholds_what_the_gate_would_remove(server, folder, launch, tmp_path, caplog):
    """The history's accepted suggestions all sit at a threshold between two prompts' confidence:
    `auto` fits exactly there, answers the weaker prompt empty (plain and streamed), records it as
    withheld, and says at start-up what it removes."""
    ungated = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    ask = {"model": "codetune", "suffix": SUFFIX, "max_tokens": 8, "temperature": 0}
    prompts = [PREFIX, "print(", "values = [1, 2, ", "    result = "]  # each gets text from the tiny model
    answers = {p: ungated.completions.create(prompt=p, **ask) for p in prompts}
    records = recorded(folder)
    confidence = {p: records[(a.id, 0)].mean_logprob for p, a in answers.items()}
    strong, *_, weak = sorted(prompts, key=confidence.get, reverse=True)
    assert confidence[strong] - confidence[weak] > 0.01 and answers[weak].choices[0].text
    middle = (confidence[strong] + confidence[weak]) / 2
    history = [completion(f"h{n}", n, mean_logprob=middle) for n in range(20)]
    history += [completion(f"l{n}", n, mean_logprob=middle - 3) for n in range(20)]
    history += [verdict(f"h{n}", True, n + 0.5) for n in range(20)]
    history += [verdict(f"l{n}", False, n + 0.5) for n in range(20)]
    gated_folder = write(tmp_path / "gated", history)
    start, stop = launch
    with caplog.at_level("WARNING", logger="codetune.serve.app"):
        gated = start(record=gated_folder, min_confidence="auto")
    try:
        assert (
            f"under {middle:.4f}" in caplog.text and "removes 20 (50.0%), 0 of them accepted" in caplog.text
        )
        stats = httpx.get(gated.url + "/admin/records", timeout=30).json()["min_confidence"]
        assert stats["threshold"] == fit_gate(read_records(gated_folder).labeled()).threshold == middle
        client = openai.OpenAI(base_url=gated.url + "/v1", api_key="none", max_retries=0, timeout=60)
        for prompt in (weak, strong):
            plain = client.completions.create(prompt=prompt, **ask).choices[0].text
            streamed = client.completions.create(prompt=prompt, stream=True, **ask)
            assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == plain
            assert plain == ("" if prompt == weak else answers[strong].choices[0].text)
        withheld = [r for r in recorded(gated_folder).values() if r.source == "serve" and r.withheld]
        assert [r.prefix for r in withheld] == [weak, weak]
        assert all(r.text == answers[weak].choices[0].text for r in withheld)
    finally:
        stop(gated)


def test_a_cut_answers_up_to_the_first_token_under_its_floor(server, folder, launch, tmp_path, caplog):
    """Records carry each token's log-probability and where its text ends, as the logprobs API reports
    them; behind --cut-below X the same prompt is answered up to the first token under X (plain and
    streamed, and recorded so); --cut-below auto fits the floor the records say and names it."""
    ungated = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    ask = {"model": "codetune", "max_tokens": 12, "temperature": 0}

    def first_dip(logprobs):  # the first token less likely than every token before it
        return next((n for n in range(1, len(logprobs)) if logprobs[n] < min(logprobs[:n])), None)

    for prompt in [PREFIX, "print(", "values = [1, 2, ", "    result = ", "def f(x):\n    return "]:
        answer = ungated.completions.create(prompt=prompt, logprobs=1, **ask)
        tokens, logprobs = answer.choices[0].logprobs.tokens, answer.choices[0].logprobs.token_logprobs
        record = recorded(folder)[(answer.id, 0)]
        assert (record.token_logprobs or []) == pytest.approx(logprobs, abs=1e-4)
        assert [record.text[:end] for end in record.token_ends or []] == [
            "".join(tokens[: n + 1]) for n in range(len(tokens))
        ]
        if (k := first_dip(logprobs)) is not None:
            break
    assert k is not None, "no prompt's answer has a token less likely than the ones before it"
    floor = (logprobs[k] + min(logprobs[:k])) / 2
    start, stop = launch
    cutting = start(record=tmp_path / "cut", cut_below=str(floor))
    try:
        client = openai.OpenAI(base_url=cutting.url + "/v1", api_key="none", max_retries=0, timeout=60)
        plain = client.completions.create(prompt=prompt, **ask).choices[0].text
        streamed = client.completions.create(prompt=prompt, stream=True, **ask)
        assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == plain
        assert plain == "".join(tokens[:k]) and len(plain) < len(answer.choices[0].text)
        kept = [r for r in recorded(tmp_path / "cut").values() if r.source == "serve"]
        assert [(r.text, len(r.token_logprobs or [])) for r in kept] == [(plain, k), (plain, k)]
    finally:
        stop(cutting)
    with caplog.at_level("WARNING", logger="codetune.serve.app"):
        fitted = start(record=write(tmp_path / "history", guessed_history()), cut_below="auto")
    try:
        stats = httpx.get(fitted.url + "/admin/records", timeout=30).json()["cut_below"]
        assert stats["floor"] == pytest.approx(-0.2)
        assert "accepted 0 -> 24, accepted characters 0 -> 72" in caplog.text
    finally:
        stop(fitted)


def test_bad_record_and_confidence_options_are_one_error_line(tmp_path):
    a_file = tmp_path / "records.jsonl"
    a_file.write_text("")
    assert_clean_error(run_cli("serve", "--model", "tiny-gpt-bigcode", "--record", str(a_file)), "is a file")
    proc = run_cli("serve", "--model", "tiny-gpt-bigcode", "--min-confidence", "auto")
    assert_clean_error(proc, "--record")
    empty = write(tmp_path / "no-feedback", [completion("a", mean_logprob=-1.0)])
    proc = run_cli("serve", "--model", "tiny-gpt-bigcode", "--record", str(empty), "--min-confidence", "auto")
    assert_clean_error(proc, "at least 20 completions with feedback")
    assert_clean_error(run_cli("serve", "--model", "tiny-gpt-bigcode", "--min-confidence", "high"), "auto")
    assert_clean_error(run_cli("serve", "--model", "tiny-gpt-bigcode", "--cut-below", "auto"), "--record")
    assert_clean_error(run_cli("serve", "--model", "tiny-gpt-bigcode", "--cut-below", "0.5"), "<= 0")
    proc = run_cli("serve", "--model", "tiny-gpt-bigcode", "--record", str(empty), "--cut-below", "auto")
    assert_clean_error(proc, "at least 20 recorded suggestions with token log-probabilities")


def test_nothing_answered_is_lost_when_the_server_is_killed(tmp_path):
    """A real `codetune serve --record` process answers requests and events, then gets SIGKILL: every
    suggestion it answered and every event it acknowledged is in the folder."""
    port = free_port()
    folder = tmp_path / "records"
    proc = subprocess.Popen(
        [sys.executable, "-m", "codetune", "serve", "--model", "tiny-gpt-bigcode", "--port", str(port),
         "--record", str(folder), "--device", "cpu"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.3)
        ids = []
        for n in range(6):
            body = {"segments": {"prefix": f"def f{n}(x):\n    return ", "suffix": "\n"}}
            ids.append(httpx.post(url + "/v1/completions", json=body, timeout=60).json()["id"])
            event = {"type": "dismiss" if n % 2 else "select", "completion_id": ids[-1], "choice_index": 0}
            assert httpx.post(url + "/v1/events", json=event, timeout=30).status_code == 200
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    records = read_records(folder)
    assert {key[0] for key in records.completions} == set(ids)
    assert [item.accepted for item in records.labeled()] == [n % 2 == 0 for n in range(6)]
    assert not records.counts


def test_start_up_reads_only_the_newest_day_files_unless_a_gate_is_fitted(tmp_path):
    """Editors report on a suggestion within seconds: without --min-confidence auto, the server reads
    today's and yesterday's files only, however long the history (an older id's event is unknown)."""
    from codetune.artifacts.records import FeedbackRecord
    from codetune.serve.recording import Recorder

    day = 24 * 3600
    history = [completion(f"d{n}", n * day, mean_logprob=-1.0 - n) for n in range(4)]
    folder = write(tmp_path / "records", history)
    old = tmp_path / "records" / "records-2026-07-01.jsonl"
    old.write_bytes(old.read_bytes() + b"{not json\n" * 100_000)  # never read: no time spent on it
    recorder = Recorder.start(folder, None)
    answers = [recorder.feedback(FeedbackRecord(id=f"d{n}", event="select", accepted=True)) for n in range(4)]
    assert answers[:2] == ["no suggestion with this id and index was recorded"] * 2 and answers[2:] == [
        None,
        None,
    ]
    recorder.close()
    many = write(folder, [verdict(f"d{n}", n % 2 == 0, n * day + 1) for n in range(4)] * 10)
    for n in range(4, 24):
        write(many, [completion(f"e{n}", n, mean_logprob=-1.0), verdict(f"e{n}", True, n + 0.5)])
    gated = Recorder.start(many, "auto")
    assert gated.gate_report["suggestions"] == 24  # the gate is fitted on the whole history
    gated.close()
