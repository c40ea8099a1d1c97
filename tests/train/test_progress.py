"""`codetune train` draws a progress bar on stderr: steps done of all, loss, tokens/s and ETA."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_train_shows_step_loss_tokens_per_s_and_eta(causal_dataset: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "codetune", "train", "-m", "tiny-llama", "-d", str(causal_dataset)]
    cmd += [
        "-o",
        str(tmp_path / "run"),
        "--max-steps",
        "3",
        "--set",
        "batch_tokens=128",
        "--set",
        "eval_every=10",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "160"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    bar = [line for line in done.stderr.splitlines() if line.startswith("train ")]
    assert bar, done.stderr[-2000:]
    assert re.search(r"step 3/3 loss \d+\.\d{4}\s+[\d,]+ tok/s \d+:\d\d:\d\d ETA \d+:\d\d:\d\d", bar[-1]), (
        bar[-1]
    )
    assert "tok/s" not in done.stdout  # stdout keeps the summary only
