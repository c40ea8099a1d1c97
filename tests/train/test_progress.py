"""`codetune train` shows its progress on stderr: plain lines where stderr is a pipe or a file (CI,
a log), a rich bar on a terminal; steps done of all, rate, loss, tokens/s and ETA either way."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path


def _command(dataset: Path, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "codetune", "train", "-m", "tiny-llama", "-d", str(dataset), "-o", str(out)]
    return [*cmd, "--max-steps", "3", "--set", "batch_tokens=128", "--set", "eval_every=10"]


def _piped(dataset: Path, out: Path, seconds: str) -> subprocess.CompletedProcess:
    """Train with stderr piped (as CI and a log file see it), a progress line every ``seconds``."""
    env = {**os.environ, "CODETUNE_THREADS": "1", "CODETUNE_PROGRESS_SECONDS": seconds}
    done = subprocess.run(_command(dataset, out), capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_train_piped_prints_one_plain_line_per_interval_and_a_last_one(
    causal_dataset: Path, tmp_path: Path
) -> None:
    done = _piped(causal_dataset, tmp_path / "run", "0")
    assert "\r" not in done.stderr  # no bar redrawn in place, no library's tqdm
    lines = [line for line in done.stderr.splitlines() if re.match(r"train: \d+/", line)]
    rate = r"[\d.,]+ (steps/s|s/step)"
    for step, line in enumerate(lines[:-1], 1):
        assert re.fullmatch(
            rf"train: {step}/3 steps \(\d+%\), {rate}, loss \d+\.\d{{4}}, [\d,]+ tok/s, \d+s(, ETA \d+s)?",
            line,
        ), line
    assert lines[-2].startswith("train: 3/3 steps (100%)")
    assert re.fullmatch(
        rf"train: 3/3 steps \(100%\), {rate}, loss \d+\.\d{{4}}, [\d,]+ tok/s, \d+s, done", lines[-1]
    )
    assert "tok/s" not in done.stdout  # stdout keeps the summary only
    # peft reading transformers' deprecated property: not the user's business
    assert "is_gradient_checkpointing" not in done.stderr


def test_train_quiet_for_less_than_the_interval_prints_no_progress_line(
    causal_dataset: Path, tmp_path: Path
) -> None:
    done = _piped(causal_dataset, tmp_path / "run", "3600")
    assert not [line for line in done.stderr.splitlines() if re.match(r"train: \d+/", line)], done.stderr


def test_train_on_a_terminal_draws_the_rich_bar(causal_dataset: Path, tmp_path: Path) -> None:
    primary, secondary = pty.openpty()
    env = {**os.environ, "CODETUNE_THREADS": "1", "COLUMNS": "160", "TERM": "xterm"}
    proc = subprocess.Popen(
        _command(causal_dataset, tmp_path / "run"), stdout=subprocess.PIPE, stderr=secondary, env=env
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=300)
    os.close(primary)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", errors="replace"))
    assert proc.returncode == 0, screen[-2000:]
    assert re.search(r"step 3/3 loss \d+\.\d{4}\s+[\d,]+ tok/s \d+:\d\d:\d\d ETA", screen), screen[-2000:]
    assert "train: 3/3 steps" not in screen  # the plain lines are for pipes and files only
