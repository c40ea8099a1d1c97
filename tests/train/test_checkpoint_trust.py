"""`codetune train --resume` never runs code from a checkpoint file, skips a damaged newest checkpoint
for the newest intact one (saying which it skipped and why), and stops with one line when none is."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
import sys
from pathlib import Path

import pytest

from codetune.train.config import TrainConfig
from codetune.train.recipe import train

SETTINGS = {"max_steps": 6, "batch_tokens": 128, "save_every": 2, "eval_every": 100, "seed": 5}


@pytest.fixture(scope="module")
def unfinished(causal_dataset: Path, tmp_path_factory) -> Path:
    """A run killed after its step-4 checkpoint: checkpoints step-2 and step-4, no deliverable."""
    run = tmp_path_factory.mktemp("unfinished") / "run"
    train(TrainConfig(model="tiny-llama", dataset=causal_dataset, out=run, **SETTINGS))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["finished"] = False
    (run / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(run / "adapter")
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000002", "step-000004"]
    return run


@pytest.fixture
def run(unfinished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(unfinished, tmp_path / "run"))


def resume(run: Path, dataset: Path, monkeypatch, capsys) -> tuple[int, str]:
    """`codetune train --resume` with the run's settings, in this process; (exit code, stderr)."""
    from codetune.cli import main

    args = ["codetune", "train", "-m", "tiny-llama", "-d", str(dataset), "-o", str(run), "--resume"]
    args += [f"--set={key}={value}" for key, value in SETTINGS.items()]
    monkeypatch.setattr(sys, "argv", args)
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code or 0
    return code, capsys.readouterr().err


def resign(file: Path) -> None:
    """Update checksums.json for ``file``, as someone who can write the run folder can."""
    listing = file.parent / "checksums.json"
    if listing.is_file():  # (the code before checksums had none to forge)
        sums = json.loads(listing.read_text())
        sums[file.name] = {
            "bytes": file.stat().st_size,
            "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
        }
        listing.write_text(json.dumps(sums))


class WritesAFile:
    """A pickle that, once loaded, writes a file (any code could run in its place)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_a_planted_pickle_never_runs(run, causal_dataset, tmp_path, monkeypatch, capsys, caplog):
    import torch

    marker = tmp_path / "code-ran"
    newest = run / "checkpoints" / "step-000004" / "rng.pt"
    torch.save({"python": WritesAFile(marker)}, newest)  # the zip format torch.save writes
    resign(newest)
    older = run / "checkpoints" / "step-000002" / "rng.pt"
    older.write_bytes(pickle.dumps(WritesAFile(marker), protocol=2))  # and a bare pickle
    resign(older)
    with caplog.at_level(logging.WARNING):
        code, err = resume(run, causal_dataset, monkeypatch, capsys)
    assert not marker.exists()
    assert code == 2, err
    assert [line for line in err.splitlines() if line.strip()] == [err.strip()]  # one line
    assert err.startswith("error: no intact checkpoint") and "step-000004: rng.pt does not load" in err
    assert "Traceback" not in err
    assert not (run / "adapter").exists()


def damage(newest: Path, how: str) -> str:
    """Damage checkpoint ``newest`` in one way; returns what the warning must say."""
    if how == "truncated weights":
        data = (newest / "weights.pt").read_bytes()
        (newest / "weights.pt").write_bytes(data[: len(data) // 2])
        return "weights.pt has"
    if how == "state.json not JSON":
        (newest / "state.json").write_text('{"step": 4, "epo')
        resign(newest / "state.json")
        return "state.json is not valid JSON"
    if how == "state.json mistyped":
        state = json.loads((newest / "state.json").read_text())
        (newest / "state.json").write_text(json.dumps({**state, "step": "four"}))
        resign(newest / "state.json")
        return "step is 'four'"
    if how == "changed optimizer":
        data = bytearray((newest / "optimizer.pt").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (newest / "optimizer.pt").write_bytes(bytes(data))
        return "optimizer.pt changed since it was written"
    if how == "no checksums":
        (newest / "checksums.json").unlink()
        return "no checksums.json"
    (newest / "scheduler.pt").unlink()
    return "scheduler.pt is missing"


def test_a_damaged_newest_checkpoint_falls_back_to_the_intact_one(
    run, causal_dataset, monkeypatch, capsys, caplog
):
    why = damage(run / "checkpoints" / "step-000004", "truncated weights")
    with caplog.at_level(logging.INFO):
        code, err = resume(run, causal_dataset, monkeypatch, capsys)
    assert code == 0, err
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and "step-000004" in skipped[0] and why in skipped[0], skipped
    assert any("resumed from" in r.getMessage() and "step-000002" in r.getMessage() for r in caplog.records)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "loss" in row] == [1, 2, 3, 4, 5, 6]  # 3 to 6 redone, once
    assert json.loads((run / "manifest.json").read_text())["finished"] is True
    assert (run / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize(
    "how",
    ["state.json not JSON", "state.json mistyped", "changed optimizer", "no checksums", "a file missing"],
)
def test_each_kind_of_damage_is_named_and_skipped(run, caplog, how):
    """What `--resume` reads (the fallback itself is shown through the CLI above)."""
    from codetune.artifacts.run import newest_intact_checkpoint

    why = damage(run / "checkpoints" / "step-000004", how)
    with caplog.at_level(logging.WARNING):
        folder, parts, state = newest_intact_checkpoint(run)
    assert folder.name == "step-000002" and state["step"] == 2 and parts["weights"]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "step-000004 skipped" in warning and why in warning, warning
