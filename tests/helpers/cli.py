"""Running codetune as a user does, and what a user error must look like."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None):
    """Run `python -m codetune ARGS` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "codetune", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def assert_clean_error(proc, *needles: str) -> None:
    """A user error: non-zero exit, an `error:` line naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text
    assert "error" in text.lower(), text
    for needle in needles:
        assert needle.lower() in text.lower(), (needle, text)


def assert_error_line(proc, *needles: str) -> None:
    """One `error:` line naming the problem, exit code 2, no traceback."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "error:" in text and "Traceback" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
