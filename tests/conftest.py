"""Shared fixtures: a CLI runner that reports exit code and output, and torch kept to two threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _restore_language_registry():
    """Languages a test registers (as a recipe would) must not leak into the next test."""
    from codetune import languages

    saved = dict(languages._REGISTRY)
    yield
    languages._REGISTRY.clear()
    languages._REGISTRY.update(saved)


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


@pytest.fixture
def cli():
    return run_cli
