"""Running codetune as a user does, and what a user error must look like."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def run_cli(
    *args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None, process: bool = False
) -> subprocess.CompletedProcess:
    """Run codetune's command line with ARGS as a user would: ``codetune.cli.main`` in this process
    (argv, cwd, stdout, stderr and log handlers swapped for the call), or in a fresh ``python -m
    codetune`` process when ``process`` is set, when ``env`` is given (libraries read some variables
    once, at import) or when $CODETUNE_TEST_PROCESS is set (every call a process, as before)."""
    if process or env or os.environ.get("CODETUNE_TEST_PROCESS"):
        return subprocess.run(
            [sys.executable, "-m", "codetune", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
    return _in_process(list(args), cwd)


def _in_process(args: list[str], cwd: Path | None) -> subprocess.CompletedProcess:
    from codetune.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with _swapped(args, cwd, out, err):
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code
        finally:
            ray = sys.modules.get("ray")
            if ray is not None and ray.is_initialized():  # a process's exit leaves the cluster
                ray.shutdown()
    if isinstance(code, str):  # sys.exit("message"): printed on stderr, status 1
        err.write(code + "\n")
        code = 1
    return subprocess.CompletedProcess(["codetune", *args], code or 0, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _swapped(args: list[str], cwd: Path | None, out: io.StringIO, err: io.StringIO) -> Iterator[None]:
    """argv, cwd, stdout and stderr as a fresh process would have them, and every log handler that
    writes to stderr (transformers', the root logger's) writing to ``err`` instead."""
    streams = {id(sys.stderr), id(sys.__stderr__)}
    handlers = [
        handler
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for handler in getattr(logger, "handlers", ())
        if type(handler) is logging.StreamHandler and id(handler.stream) in streams
    ]
    own = logging.StreamHandler(err)
    own.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    own.setLevel(os.environ.get("CODETUNE_LOG", "WARNING"))
    root = logging.getLogger()
    saved_argv, saved_cwd, saved_level = sys.argv, os.getcwd(), root.level
    old_streams = [handler.setStream(err) for handler in handlers]
    root.addHandler(own)
    root.setLevel(min(root.level or logging.WARNING, own.level))
    try:
        sys.argv = ["codetune", *args]
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        root.removeHandler(own)
        root.setLevel(saved_level)
        for handler, stream in zip(handlers, old_streams, strict=True):
            handler.setStream(stream)


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
