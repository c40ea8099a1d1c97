"""The on-disk artefacts: each one's writer and reader round-trip real files, and each broken artefact
(manifest missing or truncated, a shard missing, no splits, no weights) fails with one clear line
through the CLI commands that read it. A last test keeps the path names in codetune.artifacts."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

from codetune import cli
from codetune.artifacts import (
    adapter_folder,
    is_run,
    manifest_path,
    paths,
    read_corpus,
    read_dataset,
    read_manifest,
    read_metrics,
    read_report,
    read_run,
    update_manifest,
    write_corpus,
    write_dataset,
    write_manifest,
    write_report,
)
from codetune.artifacts import corpus as corpus_artifact
from codetune.artifacts.run import append_metrics, truncate_metrics
from codetune.errors import CodetuneError, InputError

SRC = Path(__file__).resolve().parents[2] / "src" / "codetune"


def run_main(args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """`codetune ARGS` in this process: (exit code, stderr)."""
    capsys.readouterr()  # what the test's own setup printed
    monkeypatch.setattr(sys, "argv", ["codetune", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


def assert_one_error_line(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ------------------------------------------------------------------------------------------ corpus


def corpus_rows(n: int) -> list[dict]:
    return [
        {
            "path": f"pkg/m{i}.py",
            "repo": f"repo{i % 2}",
            "language": "python",
            "content": f"def f{i}(x):\n    return x * {i}\n",
            "bytes": 30 + i,
            "lines": 2,
            "sha256": f"{i:064x}",
            "source": "local",
            "kind": "code",
            "licence_stripped": i == 1,
            "redactions": i % 3,
            "heading": None,
            "prose": None,
            "url": None,
        }
        for i in range(n)
    ]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Five rows in three shards, as `codetune collect` writes them."""
    return write_corpus(tmp_path / "corpus", corpus_rows(5), {"stage": "collect", "fingerprint": "abc"}, 2)


def test_corpus_round_trip(corpus: Path) -> None:
    import pyarrow.parquet as pq

    manifest = read_manifest(corpus)
    assert manifest["shards"] == [paths.corpus_shard_name(i, 3) for i in range(3)]
    assert sorted(p.name for p in corpus.iterdir()) == sorted([*manifest["shards"], paths.MANIFEST])
    assert pq.read_schema(corpus / manifest["shards"][0]).names == [
        name for name, _ in corpus_artifact.COLUMNS
    ]
    assert read_corpus(corpus) == corpus_rows(5)
    assert read_corpus(corpus, columns=["content"]) == [{"content": r["content"]} for r in corpus_rows(5)]


def test_a_failed_corpus_write_leaves_nothing(tmp_path: Path) -> None:
    rows = corpus_rows(3)
    import pyarrow as pa

    rows[2]["bytes"] = "not a number"
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        write_corpus(tmp_path / "corpus", rows, {"stage": "collect"}, 2)
    assert list(tmp_path.iterdir()) == []


def test_tokenizer_train_reads_the_corpus_rows(corpus, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "tok"
    code, err = run_main(
        ["tokenizer", "train", corpus, "--vocab-size", "300", "--out", out], capsys, monkeypatch
    )
    assert code == 0, err
    assert json.loads((out / "codetune_tokenizer.json").read_text())["texts"] == 5  # the rows, not the files


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda c: (c / paths.MANIFEST).unlink(), "is not a corpus folder (no manifest.json)"),
        (lambda c: (c / paths.MANIFEST).write_text('{"stage": "collect", "shar'), "manifest.json is corrupt"),
        (lambda c: (c / paths.corpus_shard_name(1, 3)).unlink(), "data-00001-of-00003.parquet listed"),
        (lambda c: (c / paths.corpus_shard_name(2, 3)).write_bytes(b"PAR1 torn"), "cannot read corpus shard"),
        (lambda c: [p.unlink() for p in c.glob("*.parquet")], "no corpus shards"),
        (lambda c: write_manifest(c, {"stage": "build"}), "is a `codetune build` output, not a corpus"),
    ],
    ids=["no-manifest", "truncated-manifest", "shard-missing", "torn-shard", "no-shards", "foreign"],
)
def test_a_broken_corpus_is_refused_by_every_reader(corpus, tmp_path, capsys, monkeypatch, damage, needle):
    damage(corpus)
    with pytest.raises(InputError, match=re.escape(needle)):
        read_corpus(corpus)
    out = tmp_path / "ds"
    code, err = run_main(["build", corpus, "--model", "tiny-gpt-bigcode", "--out", out], capsys, monkeypatch)
    assert_one_error_line(code, err, needle)
    assert not out.exists()
    code, err = run_main(["tokenizer", "train", corpus, "--out", tmp_path / "tok"], capsys, monkeypatch)
    assert_one_error_line(code, err, needle)


# ----------------------------------------------------------------------------------------- dataset


def dataset_splits(names=("train", "valid", "test")) -> dict:
    from datasets import Dataset

    return {
        name: Dataset.from_list(
            [{"path": f"{name}/{i}.py", "text": f"x = {i}\n", "input_ids": [1, 2, 3 + i]} for i in range(3)]
        )
        for name in names
    }


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    stats = {"format": "files", "kind": "causal", "max_length": 64, "splits": {"train": {"tokens": 9}}}
    return write_dataset(
        tmp_path / "ds",
        dataset_splits(),
        stats,
        {"stage": "build", "fingerprint": "f00d"},
        extra=lambda folder: (folder / paths.LENGTHS_PLOT).write_bytes(b"png"),
    )


def test_dataset_round_trip(dataset: Path) -> None:
    read = read_dataset(dataset)
    assert {name: split.to_list() for name, split in read.splits.items()} == {
        name: split.to_list() for name, split in dataset_splits().items()
    }
    assert read.stats["splits"]["train"]["tokens"] == 9 and read.kind == "causal"
    assert read.fingerprint == "f00d" and read.manifest == {"stage": "build", "fingerprint": "f00d"}
    assert (dataset / paths.LENGTHS_PLOT).read_bytes() == b"png"
    assert read.tokenizer is None
    assert not list(dataset.parent.glob(".ds.*"))  # the temporary folder was moved into place


def test_dataset_kind_comes_from_the_columns_when_stats_lack_it(tmp_path: Path) -> None:
    from datasets import Dataset

    rows = Dataset.from_list([{"input_ids": [1, 2], "labels": [3]}])
    folder = write_dataset(tmp_path / "s2s", {"train": rows}, {"format": "seq2seq"}, {"stage": "build"})
    assert read_dataset(folder).kind == "seq2seq"


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (
            lambda d: (d / paths.STATS).unlink(),
            "is not a dataset folder from `codetune build` (no stats.json)",
        ),
        (lambda d: (d / paths.STATS).write_text('{"format": "fi'), "stats.json is corrupt"),
        (lambda d: (d / paths.DATASET_DICT).unlink(), "has no splits"),
        (lambda d: (d / paths.MANIFEST).write_text("[1, 2"), "manifest.json is corrupt"),
        (lambda d: __import__("shutil").rmtree(d / "test"), "cannot read the splits"),
    ],
    ids=["no-stats", "truncated-stats", "no-splits", "truncated-manifest", "split-folder-missing"],
)
def test_a_broken_dataset_is_refused_by_train_and_eval(
    dataset, tmp_path, capsys, monkeypatch, damage, needle
):
    damage(dataset)
    with pytest.raises(InputError):
        read_dataset(dataset)
    report = tmp_path / "report"
    code, err = run_main(["eval", "-m", "tiny-gpt-bigcode", "-d", dataset, "-o", report], capsys, monkeypatch)
    assert_one_error_line(code, err, needle)
    assert not report.exists()
    run = tmp_path / "run"
    code, err = run_main(["train", "-m", "tiny-gpt-bigcode", "-d", dataset, "-o", run], capsys, monkeypatch)
    assert_one_error_line(code, err, needle)
    assert not run.exists()


def test_each_stage_names_the_split_it_lacks(tmp_path, capsys, monkeypatch) -> None:
    folder = write_dataset(
        tmp_path / "ds", dataset_splits(("valid",)), {"kind": "causal"}, {"stage": "build"}
    )
    code, err = run_main(
        ["eval", "-m", "tiny-gpt-bigcode", "-d", folder, "-o", tmp_path / "r"], capsys, monkeypatch
    )
    assert_one_error_line(code, err, "has no test split (it has valid)")
    code, err = run_main(
        ["train", "-m", "tiny-gpt-bigcode", "-d", folder, "-o", tmp_path / "t"], capsys, monkeypatch
    )
    assert_one_error_line(code, err, "has no train split")


def test_a_missing_dataset_folder(tmp_path, capsys, monkeypatch) -> None:
    args = ["train", "-m", "tiny-gpt-bigcode", "-d", tmp_path / "nope", "-o", tmp_path / "run"]
    code, err = run_main(args, capsys, monkeypatch)
    assert_one_error_line(code, err, "dataset folder not found")


# -------------------------------------------------------------------------------------- run folder


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory) -> Path:
    """A run folder as `codetune train --method lora` leaves it: manifest, adapter/, tokenizer/, metrics."""
    from peft import LoraConfig, get_peft_model

    from codetune.modeling.loading import load_model, load_tokenizer

    run = tmp_path_factory.mktemp("run")
    model = get_peft_model(load_model("tiny-gpt-bigcode"), LoraConfig(r=2, target_modules=["c_attn"]))
    model.save_pretrained(run / paths.ADAPTER)
    load_tokenizer("tiny-gpt-bigcode").save_pretrained(run / paths.TOKENIZER)
    write_manifest(run, {"model": "tiny-gpt-bigcode", "method": "lora", "finished": True})
    return run


def copy_run(run: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, to))


def test_run_folder_round_trip(adapter_run: Path) -> None:
    from codetune.modeling.loading import resolve_model

    run = read_run(adapter_run)
    assert is_run(adapter_run)
    assert run.adapter == adapter_run / paths.ADAPTER and run.model is None
    assert run.tokenizer == adapter_run / paths.TOKENIZER and run.base == "tiny-gpt-bigcode"
    ref = resolve_model(adapter_run)
    assert ref.adapter == run.adapter and ref.tokenizer == str(run.tokenizer)
    assert ref.base == resolve_model("tiny-gpt-bigcode").base
    assert adapter_folder(adapter_run) == (run.adapter, run.tokenizer)
    assert adapter_folder(run.adapter) == (run.adapter, None)  # a bare adapter folder too


def test_metrics_append_truncate_and_a_torn_last_line(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        append_metrics(tmp_path, {"step": step, "loss": 1.0 / step})
    with open(tmp_path / paths.METRICS, "a") as handle:
        handle.write('{"step": 4, "lo')  # killed mid-write
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    truncate_metrics(tmp_path, 2)
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    assert read_metrics(tmp_path / "elsewhere") == []


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (
            lambda r: (r / paths.MANIFEST).unlink(),
            "is not a run folder from `codetune train` (no manifest.json)",
        ),
        (lambda r: (r / paths.MANIFEST).write_text('{"model": "tiny'), "manifest.json is corrupt"),
        (lambda r: (r / paths.ADAPTER / paths.ADAPTER_CONFIG).unlink(), "has no adapter_config.json"),
        (lambda r: __import__("shutil").rmtree(r / paths.ADAPTER), "has no adapter/ or model/"),
        (lambda r: write_manifest(r, {"method": "lora"}), "does not name the base model"),
    ],
    ids=["no-manifest", "truncated-manifest", "no-adapter-config", "no-weights", "no-base"],
)
def test_a_broken_run_folder_is_refused_by_merge(adapter_run, tmp_path, capsys, monkeypatch, damage, needle):
    run = copy_run(adapter_run, tmp_path / "run")
    damage(run)
    with pytest.raises(InputError):
        read_run(run)
    out = tmp_path / "merged"
    code, err = run_main(["merge", run, "--out", out], capsys, monkeypatch)
    assert_one_error_line(code, err, needle)
    assert not out.exists()


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda r: (r / paths.MANIFEST).write_text('{"model": "tiny'), "manifest.json is corrupt"),
        (lambda r: (r / paths.ADAPTER / paths.ADAPTER_CONFIG).unlink(), "has no adapter_config.json"),
    ],
    ids=["truncated-manifest", "no-adapter-config"],
)
def test_generate_resolves_a_run_folder_with_the_same_reader(
    adapter_run, tmp_path, capsys, monkeypatch, damage, needle
):
    run = copy_run(adapter_run, tmp_path / "run")
    damage(run)
    prompts = tmp_path / "in.jsonl"
    prompts.write_text('{"prompt": "def f("}\n')
    out = tmp_path / "out.jsonl"
    code, err = run_main(["generate", "--model", run, "--input", prompts, "--out", out], capsys, monkeypatch)
    assert_one_error_line(code, err, needle)


def test_an_adapter_option_that_is_no_adapter(tmp_path: Path) -> None:
    from codetune.modeling.loading import resolve_model

    with pytest.raises(CodetuneError, match="no adapter found at"):
        resolve_model("tiny-gpt-bigcode", adapter=tmp_path)


# ------------------------------------------------------------------------------------------ report


def draw(folder: Path) -> list[str]:
    (folder / paths.METRICS_PLOT).write_bytes(b"png")
    return [paths.METRICS_PLOT]


def test_report_round_trip_and_its_broken_forms(tmp_path: Path) -> None:
    report = {
        "models": {"base": {"exact_match": 12.5}},
        "settings": {"decoding": "greedy"},
        "predictions": [{"id": 1, "completion": "x"}, {"id": 2, "completion": "é"}],
    }
    out = write_report(
        tmp_path / "report",
        report,
        markdown=lambda written, drawn: f"# {sorted(written['models'])} {drawn}\n",
        plots=draw,
        manifest={"stage": "eval", "fingerprint": "r1"},
    )
    back = read_report(out)
    assert back["models"] == report["models"] and back["predictions"] == report["predictions"]
    assert back["plots"] == [paths.METRICS_PLOT] and back["predictions_file"] == paths.PREDICTIONS
    assert "predictions" not in json.loads((out / paths.REPORT_JSON).read_text())  # kept beside, not inside
    assert (out / paths.REPORT_MD).read_text() == "# ['base'] ['metrics.png']\n"
    assert read_manifest(out)["fingerprint"] == "r1"

    (out / paths.PREDICTIONS).unlink()
    with pytest.raises(InputError, match=r"names predictions\.jsonl but the file is missing"):
        read_report(out)
    (out / paths.REPORT_JSON).write_text('{"models": {')
    with pytest.raises(InputError, match=r"report\.json is corrupt"):
        read_report(out)
    (out / paths.REPORT_JSON).unlink()
    with pytest.raises(InputError, match="not a report folder"):
        read_report(out)


# -------------------------------------------------------------------------------------- manifests


# ------------------------------------------------------------------------------ output folders


def users_files(tmp_path: Path) -> tuple[Path, Path]:
    """A project folder with the user's own file in it, and a plain file: neither is codetune's."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.md").write_text("my notes\n")
    single = tmp_path / "notes.txt"
    single.write_text("keep me\n")
    return project, single


@pytest.mark.parametrize(
    "command",
    [
        ["collect", "{src}", "--language", "python"],
        ["collect", "{src}", "--language", "python", "--out", "{tmp}/corpus", "--rejected"],
        ["build", "{corpus}"],
        ["tokenizer", "train", "{corpus}"],
        ["merge", "{tmp}/no-run"],
        ["eval", "--dataset", "{tmp}/no-dataset", "--model", "tiny-llama"],
    ],
    ids=["collect", "collect-rejected", "build", "tokenizer", "merge", "eval"],
)
@pytest.mark.parametrize("target", ["folder", "file", "run"])
def test_an_output_that_holds_the_users_files_is_refused_and_kept(
    command, target, corpus, tmp_path, capsys, monkeypatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("def f(x):\n    return x + 1\n\n\ndef g(y):\n    return y * 2\n")
    project, single = users_files(tmp_path)
    run = tmp_path / "run"  # a training run's shape: its manifest names no stage
    (run / paths.ADAPTER).mkdir(parents=True)
    write_manifest(run, {"model": "tiny-llama", "method": "lora", "finished": True})
    out = {"folder": project, "file": single, "run": run}[target]
    args = [a.format(src=src, corpus=corpus, tmp=tmp_path) for a in command]
    args += [str(out)] if args[-1] == "--rejected" else ["--out", str(out)]
    code, err = run_main(args, capsys, monkeypatch)
    flag = "--rejected" if "--rejected" in args else "--out"
    needle = {
        "folder": "is a folder codetune did not write (it holds notes.md)",
        "file": "is a file",
        "run": "holds a codetune training run",
    }[target]
    assert_one_error_line(code, err, f"{flag} {out}", needle)
    assert (project / "notes.md").read_text() == "my notes\n" and single.read_text() == "keep me\n"
    assert sorted(p.name for p in run.iterdir()) == [paths.ADAPTER, paths.MANIFEST]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no .old, no .partial


def test_a_stage_refuses_its_own_input_as_its_output(corpus, capsys, monkeypatch) -> None:
    before = read_corpus(corpus)
    code, err = run_main(["build", corpus, "--out", corpus], capsys, monkeypatch)
    assert_one_error_line(code, err, f"--out {corpus} holds the output of codetune collect")
    assert read_corpus(corpus) == before


def test_an_unreadable_input_file_is_one_error_line_with_exit_2(tmp_path, capsys, monkeypatch) -> None:
    garbage = tmp_path / "export.jsonl"
    garbage.write_bytes(bytes(range(128, 256)) * 8)  # not UTF-8
    code, err = run_main(
        ["doccano", "import", garbage, "--out", tmp_path / "pairs.jsonl"], capsys, monkeypatch
    )
    assert_one_error_line(code, err, "not UTF-8 text")


def test_the_writers_refuse_a_folder_of_the_users_files_too(tmp_path: Path) -> None:
    """The Python API's writers refuse it, and check again at the rename: a folder filled meanwhile is kept."""
    project, _ = users_files(tmp_path)
    with pytest.raises(InputError, match="did not write"):
        write_corpus(project, corpus_rows(2), {"stage": "collect"}, 2)
    assert [p.name for p in project.iterdir()] == ["notes.md"]
    later = tmp_path / "later"
    later.mkdir()  # empty when the report starts

    def plots(folder: Path) -> list[str]:
        (later / "draft.md").write_text("written while eval ran\n")
        return []

    with pytest.raises(InputError, match=r"it holds draft\.md"):
        write_report(later, {"models": []}, markdown=lambda r, p: "", plots=plots, manifest={})
    assert [p.name for p in later.iterdir()] == ["draft.md"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the partial folder is gone
    # An earlier output of codetune, and an empty folder, are replaced as before.
    again = write_corpus(tmp_path / "corpus", corpus_rows(2), {"stage": "collect"}, 2)
    write_corpus(again, corpus_rows(3), {"stage": "collect"}, 2)
    assert len(read_corpus(again)) == 3
    (tmp_path / "empty").mkdir()
    assert len(read_corpus(write_corpus(tmp_path / "empty", corpus_rows(1), {"stage": "collect"}, 2))) == 1


def test_a_file_output_keeps_its_manifest_beside_it(tmp_path: Path) -> None:
    out = tmp_path / "completions.jsonl"
    assert manifest_path(out) == tmp_path / "completions.jsonl.manifest.json"
    assert manifest_path(tmp_path) == tmp_path / paths.MANIFEST
    update_manifest(out, recipe_fingerprint="a")
    assert update_manifest(out, other=1) == {"recipe_fingerprint": "a", "other": 1}
    assert read_manifest(out) == {"recipe_fingerprint": "a", "other": 1}


def test_the_runner_ignores_a_corrupt_manifest_and_rewrites_it(tmp_path: Path) -> None:
    from codetune.runner import recorded_fingerprint

    (tmp_path / paths.MANIFEST).write_text('{"recipe_finger')
    assert recorded_fingerprint(tmp_path) is None  # unreadable: the stage reruns


# ----------------------------------------------------------------------------------- one owner


NAMES = {
    value
    for name, value in vars(paths).items()
    if name.isupper() and isinstance(value, str) and ("." in value or "*" in value)
}


def _literals(tree: ast.AST):
    """Every string constant of a module except docstrings, with its line."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_only_codetune_artifacts_spells_the_artefact_file_names() -> None:
    assert {"manifest.json", "stats.json", "metrics.jsonl", "adapter_config.json", "report.json"} <= NAMES
    found = []
    for file in sorted(SRC.rglob("*.py")):
        if "artifacts" in file.relative_to(SRC).parts:
            continue
        for line, text in _literals(ast.parse(file.read_text(encoding="utf-8"))):
            # a path segment spelled out: "manifest.json", or "x/manifest.json"
            if text in NAMES or any(text.endswith("/" + name) for name in NAMES):
                found.append(f"{file.relative_to(SRC)}:{line}: {text!r}")
    assert not found, "artefact file names outside codetune/artifacts:\n" + "\n".join(found)
