"""A run killed with SIGKILL resumes from its last checkpoint and ends like an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codetune.train.config import TrainConfig
from codetune.train.recipe import train

STEPS = 24
SETTINGS = {"max_steps": STEPS, "batch_tokens": 128, "save_every": 4, "eval_every": 8, "lr": 3e-3, "seed": 3}


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.slow
def test_resume_after_sigkill(causal_dataset: Path, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    overrides = [f"--set={key}={value}" for key, value in SETTINGS.items()]
    cmd = [
        sys.executable,
        "-m",
        "codetune",
        "train",
        "-m",
        "tiny-llama",
        "-d",
        str(causal_dataset),
        "-o",
        str(killed),
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step-000008").is_dir():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "adapter").exists()

    resumed = train(
        TrainConfig(model="tiny-llama", dataset=causal_dataset, out=killed, resume=True, **SETTINGS)
    )
    straight = train(
        TrainConfig(model="tiny-llama", dataset=causal_dataset, out=tmp_path / "straight", **SETTINGS)
    )
    assert resumed.summary["steps"] == straight.summary["steps"] == STEPS
    assert sorted(losses(killed)) == list(range(1, STEPS + 1))  # no step lost, none logged twice
    assert resumed.summary["best_eval_loss"] == pytest.approx(straight.summary["best_eval_loss"], abs=1e-3)
    for step, loss in losses(straight.out).items():
        assert losses(killed)[step] == pytest.approx(loss, abs=1e-3), step


def test_resume_needs_the_flag(causal_dataset: Path, tmp_path: Path) -> None:
    from codetune.errors import CodetuneError

    run = tmp_path / "run"
    settings = {**SETTINGS, "max_steps": 2}
    train(TrainConfig(model="tiny-llama", dataset=causal_dataset, out=run, **settings))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["finished"] = False  # as if it had been killed
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CodetuneError, match="add --resume"):
        train(TrainConfig(model="tiny-llama", dataset=causal_dataset, out=run, **settings))
