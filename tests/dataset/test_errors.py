"""Each bad input gives one clear line through the CLI, a non-zero exit, and no output folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.helpers.dataset import corpus_rows, make_tokenizer, write_corpus

from codetune import cli
from codetune.languages import Language, register_language


def run_main(
    args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["codetune", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.err


def assert_clean_failure(code: int, err: str, out: Path, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))


def test_missing_corpus(tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "ds"
    code, err = run_main(["build", str(tmp_path / "nope"), "--out", str(out)], capsys, monkeypatch)
    assert_clean_failure(code, err, out, "corpus not found", "nope")


def test_empty_corpus(tmp_path: Path, capsys, monkeypatch) -> None:
    corpus = write_corpus(tmp_path / "corpus", [])
    out = tmp_path / "ds"
    code, err = run_main(["build", str(corpus), "--out", str(out)], capsys, monkeypatch)
    assert_clean_failure(code, err, out, "is empty")


def test_folder_without_shards(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "corpus").mkdir()
    out = tmp_path / "ds"
    code, err = run_main(["build", str(tmp_path / "corpus"), "--out", str(out)], capsys, monkeypatch)
    assert_clean_failure(code, err, out, "no corpus shards")


def test_units_for_a_language_without_grammar(tmp_path: Path, capsys, monkeypatch) -> None:
    register_language(Language("plaintext_test", (".txt",), None))
    rows = corpus_rows(repos=3, files_per_repo=1, languages=("python",))
    rows[1] = {**rows[1], "language": "plaintext_test", "path": "notes.txt"}
    corpus = write_corpus(tmp_path / "corpus", rows)
    out = tmp_path / "ds"
    code, err = run_main(["build", str(corpus), "--format", "units", "--out", str(out)], capsys, monkeypatch)
    assert_clean_failure(code, err, out, "'plaintext_test' has no tree-sitter grammar")


def test_tokenizer_without_eos(corpus: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    folder = make_tokenizer(tmp_path / "tok", eos=False)
    out = tmp_path / "ds"
    code, err = run_main(
        ["build", str(corpus), "--model", str(folder), "--out", str(out)], capsys, monkeypatch
    )
    assert_clean_failure(code, err, out, "has no EOS token")


def test_fim_on_a_seq2seq_model(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "c.jsonl").write_text(json.dumps({"intent": "a", "snippet": "b", "rewritten_intent": "c"}))
    out = tmp_path / "ds"
    args = [
        "build",
        str(tmp_path / "c.jsonl"),
        "-f",
        "seq2seq",
        "-m",
        "tiny-t5",
        "-o",
        str(out),
        "--set",
        "fim_rate=0.5",
    ]
    code, err = run_main(args, capsys, monkeypatch)
    assert_clean_failure(code, err, out, "FIM was requested", "encoder-decoder")


def test_causal_format_on_a_seq2seq_model(corpus: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "ds"
    code, err = run_main(["build", str(corpus), "-m", "tiny-t5", "-o", str(out)], capsys, monkeypatch)
    assert_clean_failure(code, err, out, "use --format seq2seq")


def test_unknown_format_and_missing_fields(corpus: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "ds"
    code, err = run_main(["build", str(corpus), "-f", "nope", "-o", str(out)], capsys, monkeypatch)
    assert_clean_failure(code, err, out, "unknown format 'nope'")
    (tmp_path / "p.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}))
    code, err = run_main(
        ["build", str(tmp_path / "p.jsonl"), "-f", "instruct", "-o", str(out)], capsys, monkeypatch
    )
    assert_clean_failure(code, err, out, "p.jsonl:1", "'instruction'")


def test_subprocess_error_is_one_line(tmp_path: Path) -> None:
    import subprocess

    out = tmp_path / "ds"
    result = subprocess.run(
        [sys.executable, "-m", "codetune", "build", str(tmp_path / "missing"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_clean_failure(result.returncode, result.stderr, out, "corpus not found")


def test_rebuild_replaces_the_folder_atomically(tmp_path: Path, capsys, monkeypatch) -> None:
    corpus = write_corpus(tmp_path / "corpus", corpus_rows())
    out = tmp_path / "ds"
    code, _ = run_main(["build", str(corpus), "-o", str(out), "--set", "fim_rate=0"], capsys, monkeypatch)
    assert code == 0 and (out / "stats.json").is_file()
    before = (out / "manifest.json").read_text()
    # a failing rebuild leaves the previous dataset untouched
    code, err = run_main(
        ["build", str(corpus), "-o", str(out), "-m", str(tmp_path / "no-model")], capsys, monkeypatch
    )
    assert code == 2 and "model path not found" in err
    assert (out / "manifest.json").read_text() == before
    assert not list(tmp_path.glob(".ds.*"))
