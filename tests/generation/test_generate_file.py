"""`codetune generate`: fields kept, results appended, resumable after a SIGKILL; seq2seq too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tests.helpers.cli import assert_error_line, run_cli

from codetune.errors import InputError
from codetune.generation.batch import generate_file
from codetune.generation.config import GenerateConfig


def write_prompts(path, count):
    rows = [
        {
            "id": f"r{i}",
            "prompt": f"def f{i}(x):\n" + "    x = x + 1\n" * (i % 7) + "    return",
            "lang": "py",
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def read_out(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_generate_keeps_fields_and_resumes_without_redoing(tmp_path):
    rows = write_prompts(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out.jsonl"
    cfg = GenerateConfig(input=tmp_path / "in.jsonl", out=out, max_new_tokens=4, batch_size=4)
    first = generate_file(cfg)
    results = read_out(out)
    assert [r["id"] for r in sorted(results, key=lambda r: int(r["id"][1:]))] == [r["id"] for r in rows]
    assert all(r["lang"] == "py" and r["completion"] and r["finish_reason"] == "length" for r in results)
    assert first.summary["generated"] == 6
    # A killed run leaves a partial line: it is dropped and that row regenerated; nothing else is redone.
    text = out.read_text()
    keep = text.splitlines(keepends=True)[:3]
    out.write_text("".join(keep) + keep[0][: len(keep[0]) // 2])
    again = generate_file(cfg)
    assert again.summary["generated"] == 3 and again.summary["skipped (already done)"] == 3
    resumed = read_out(out)
    assert sorted(r["id"] for r in resumed) == sorted(r["id"] for r in rows)
    assert {r["id"]: r["completion"] for r in resumed} == {r["id"]: r["completion"] for r in results}


def test_generate_resumes_after_sigkill(tmp_path):
    write_prompts(tmp_path / "in.jsonl", 24)
    out = tmp_path / "out.jsonl"
    command = [
        sys.executable,
        "-m",
        "codetune",
        "generate",
        "--model",
        "tiny-gpt-bigcode",
        "--input",
        str(tmp_path / "in.jsonl"),
        "--out",
        str(out),
        "--set",
        "max_new_tokens=12",
        "--set",
        "batch_size=1",
        "--set",
        "device=cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and len(out.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, "finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = read_out_lenient(out)
    assert 3 <= len(before) < 24
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = read_out(out)
    ids = [r["id"] for r in results]
    assert len(ids) == len(set(ids)) == 24
    # Rows written before the kill are kept as they were; the rest were added after them.
    assert [json.loads(line) for line in before] == results[: len(before)]
    assert all(r["completion"] and r["new_tokens"] == 12 for r in results)


def test_resume_refuses_an_output_file_of_another_run(tmp_path, cli):
    """Rows of another input, model or settings are never counted as done: one error line, and the
    file is left as it was."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_prompts(first, 3)
    rows = [{"id": f"r{i}", "prompt": f"class C{i}:\n    def"} for i in range(3)]  # same ids, other prompts
    second.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    base = ["generate", "--model", "tiny-gpt-bigcode", "--out", str(out), "--set", "max_new_tokens=2"]
    done = cli(*base, "--input", str(first))
    assert done.returncode == 0, done.stderr
    written = out.read_bytes()
    other_prompts = cli(*base, "--input", str(second))
    assert_error_line(other_prompts, "belongs to another run", "id='r")
    other_settings = cli(*base, "--input", str(first), "--set", "temperature=0.7")
    assert_error_line(other_settings, "belongs to another run")
    other_model = cli(*base[:2], "tiny-llama", *base[3:], "--input", str(first))
    assert_error_line(other_model, "belongs to another run")
    assert out.read_bytes() == written
    again = cli(*base, "--input", str(first))  # the same run resumes: nothing to redo
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == written


def read_out_lenient(path):
    return [line for line in path.read_text().split("\n")[:-1] if line.strip()]


def test_seq2seq_rewrites_intents(tmp_path):
    rows = [
        {"question_id": i, "intent": text} for i, text in enumerate(["sort a list", "open a file", "sum it"])
    ]
    (tmp_path / "conala.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = GenerateConfig(
        model="tiny-t5",
        input=tmp_path / "conala.jsonl",
        out=tmp_path / "rewritten.jsonl",
        prompt_field="intent",
        id_field="question_id",
        output_field="rewritten_intent",
        max_new_tokens=4,
        num_beams=2,
    )
    result = generate_file(cfg)
    out = read_out(tmp_path / "rewritten.jsonl")
    assert sorted(r["question_id"] for r in out) == [0, 1, 2]
    assert all("rewritten_intent" in r and r["new_tokens"] <= 4 for r in out)
    assert result.summary["rows"] == 3


def test_fim_rows_and_n_per_prompt(tmp_path):
    rows = [{"prompt": "def f(x):\n    return ", "suffix": "\n\nprint(f(1))\n"}, {"prompt": "import "}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = GenerateConfig(
        input=tmp_path / "in.jsonl",
        out=tmp_path / "out.jsonl",
        max_new_tokens=5,
        n=2,
        temperature=0.8,
        seed=1,
    )
    generate_file(cfg)
    out = {r["id"]: r for r in read_out(tmp_path / "out.jsonl")}
    assert set(out) == {0, 1}
    assert all(len(r["completions"]) == 2 for r in out.values())
    assert all("\n" not in text for text in out[0]["completions"])  # single-line FIM clean-up


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{bad json\n", "not valid JSON"),
        ('{"text": "x"}\n', "no string field 'prompt'"),
        ('{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n', "duplicate id"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, content, message):
    (tmp_path / "in.jsonl").write_text(content)
    with pytest.raises(InputError, match=message):
        generate_file(GenerateConfig(input=tmp_path / "in.jsonl", out=tmp_path / "out.jsonl"))
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_reports_a_missing_input_in_one_line(tmp_path):
    done = run_cli(
        "generate", "--model", "tiny-gpt-bigcode", "--input", str(tmp_path / "missing.jsonl"),
        "--out", str(tmp_path / "o.jsonl"),
    )  # fmt: skip
    assert done.returncode == 2
    assert "input file not found" in done.stderr and "Traceback" not in done.stderr


def test_a_model_that_does_not_load_leaves_no_output_file(tmp_path):
    write_prompts(tmp_path / "in.jsonl", 2)
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "codetune", "generate", "--model", str(tmp_path / "no-such-model"),
               "--input", str(tmp_path / "in.jsonl"), "--out", str(out)]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert done.returncode == 2
    assert "model path not found" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()  # an empty file would read as "nothing generated yet" and hide the failure
