"""bench/gpu_check.py: skips clearly without CUDA; with --tiny --device cpu it runs end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "bench" / "gpu_check.py"


def run(*args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_skips_with_a_clear_line_without_cuda() -> None:
    done = run(timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == (
        "gpu_check: skipped: no CUDA device here (run it on a GPU machine, or try --tiny --device cpu)"
    )


@pytest.mark.slow
def test_tiny_shape_runs_end_to_end_on_cpu() -> None:
    done = run("--tiny", "--device", "cpu", "--steps", "2", "--requests", "2", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith("codetune LoRA packed (sdpa)") for line in lines)
    assert any(line.startswith("HF Trainer + peft, padded to 128") for line in lines)
    assert re.search(r"merge: max \|logit difference\| \d\.\d\de[-+]\d\d \(fp32 check\)", done.stdout)
    assert re.search(r"serve: 2 requests, \d+ tokens", done.stdout)
    assert re.fullmatch(
        r"ratio: \d+\.\d\dx non-pad tokens/s, codetune LoRA packed vs HF Trainer \+ peft padded to 128",
        lines[-1],
    )
