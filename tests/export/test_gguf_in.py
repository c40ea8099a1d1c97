"""--model FILE.gguf: converted once into the cache; bad files refused with one line, nothing half-written."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
from tests.helpers.cli import assert_clean_error, run_cli

from codetune.export.config import ExportConfig
from codetune.export.runner import export

pytest.importorskip("gguf")
pytest.importorskip("conversion")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    """tiny-gemma3 as an f16 GGUF (made once for the module)."""
    out = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return export(ExportConfig(model="tiny-gemma3", out=out, check_prompts=0)).out


def generate(model: str, tmp_path: Path, cache: Path, env: dict | None = None):
    """`codetune generate --model MODEL` on one prompt, with its own codetune cache."""
    prompts = tmp_path / "in.jsonl"
    prompts.write_text(json.dumps({"prompt": "def add(a, b):"}) + "\n")
    return run_cli(
        "generate",
        "--model",
        model,
        "--input",
        str(prompts),
        "--out",
        str(tmp_path / "out.jsonl"),
        "--max-new-tokens",
        "4",
        env={"CODETUNE_CACHE": str(cache), **(env or {})},
    )


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A codetune cache of the test's own for converted GGUFs (the presets stay in the shared one)."""
    from codetune.modeling import gguf as gguf_module

    folder = tmp_path / "cache"
    monkeypatch.setattr(gguf_module, "converted_dir", lambda digest: folder / "gguf" / f"v1-{digest[:32]}")
    return folder


def refused(path: Path, *needles: str) -> None:
    """resolve_model(path) raises one ModelLoadError naming the problem (the CLI prints it as `error:`)."""
    from codetune.errors import ModelLoadError
    from codetune.modeling.loading import resolve_model

    with pytest.raises(ModelLoadError) as caught:
        resolve_model(path)
    for needle in needles:
        assert needle.lower() in str(caught.value).lower(), str(caught.value)


def nothing_half_written(cache: Path) -> None:
    folder = cache / "gguf"
    assert not folder.exists() or list(folder.iterdir()) == [], list(folder.iterdir())


def test_a_gguf_converts_once_and_then_loads_from_the_cache(tiny_gguf, tmp_path, cache, capsys):
    from codetune.generation.api import CodeModel

    first = CodeModel(tiny_gguf, device="cpu")
    assert "converting tiny.gguf" in capsys.readouterr().err  # the progress line
    digest = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    converted = list((cache / "gguf").iterdir())
    assert [p.name for p in converted] == [f"v1-{digest[:32]}"]
    assert json.loads((converted[0] / "source.json").read_text())["sha256"] == digest
    # a folder holding the file is the file; the second time nothing is converted
    second = CodeModel(tiny_gguf.parent, device="cpu")
    assert "converting" not in capsys.readouterr().err
    assert first.complete("def add(a, b):", max_new_tokens=6) == second.complete(
        "def add(a, b):", max_new_tokens=6
    )


def test_a_corrupt_file_is_refused_with_one_error_line(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    proc = generate(str(bad), tmp_path, tmp_path / "cache")
    assert_clean_error(proc, "not a readable GGUF file")
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1
    nothing_half_written(tmp_path / "cache")


def test_a_truncated_file_is_refused(tiny_gguf, tmp_path, cache):
    cut = tmp_path / "cut.gguf"
    data = tiny_gguf.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    refused(cut, "not a readable GGUF file", "truncated")
    nothing_half_written(cache)


@pytest.mark.parametrize("kind", ["sidecar", "SHA256SUMS"])
def test_a_wrong_published_hash_is_refused(tiny_gguf, tmp_path, kind, cache):
    copy = tmp_path / "model.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    wrong = "0" * 64
    if kind == "sidecar":
        (tmp_path / "model.gguf.sha256").write_text(f"{wrong}  model.gguf\n")
    else:
        (tmp_path / "SHA256SUMS").write_text(f"{wrong}  other.gguf\n{wrong}  model.gguf\n")
    refused(copy, "SHA-256", "corrupt or was changed")
    nothing_half_written(cache)


def test_a_right_published_hash_is_accepted(tiny_gguf, tmp_path):
    copy = tmp_path / "model.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    digest = hashlib.sha256(copy.read_bytes()).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  model.gguf\n")
    from codetune.modeling.gguf import expected_sha256, sha256_file

    assert expected_sha256(copy) == (digest, tmp_path / "SHA256SUMS") and sha256_file(copy) == digest


def test_an_architecture_transformers_does_not_read_is_refused(tmp_path, cache):
    starcoder = export(ExportConfig(model="tiny-gpt-bigcode", out=tmp_path / "sc.gguf", check_prompts=0)).out
    refused(starcoder, "architecture 'starcoder'", "not one transformers reads")
    nothing_half_written(cache)


def test_without_the_gguf_package(tiny_gguf, tmp_path):
    blocker = tmp_path / "blocked"
    (blocker / "gguf").mkdir(parents=True)
    (blocker / "gguf" / "__init__.py").write_text("raise ImportError('gguf is not installed')\n")
    path = os.pathsep.join([str(blocker), *sys.path[:1], os.environ.get("PYTHONPATH", "")])
    proc = generate(str(tiny_gguf), tmp_path, tmp_path / "cache", env={"PYTHONPATH": path})
    assert_clean_error(proc, "needs the `gguf` package", "pip install")
    nothing_half_written(tmp_path / "cache")


def test_a_folder_with_two_ggufs_is_ambiguous(tiny_gguf, tmp_path, cache):
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(tiny_gguf.read_bytes())
    refused(tmp_path, "2 GGUF files", "a.gguf")
