"""`make quickstart` / `make test` on a fresh clone where the system Python refuses pip (PEP 668)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_PYTHON = getattr(sys, "_base_executable", None) or sys.executable

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def fresh_clone(tmp_path: Path) -> Path:
    """A clone as CI makes it, carrying this tree's Makefile (which may not be committed yet)."""
    clone = tmp_path / "clone"
    if (ROOT / ".git").exists() and shutil.which("git"):
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", f"file://{ROOT}", str(clone)], check=True)
    else:
        clone.mkdir()
    for name in ("Makefile", "constraints.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, clone / name)
    return clone


def managed_python(tmp_path: Path, *, venv_module: bool = True) -> Path:
    """This Python, seen through a stdlib folder that carries PEP 668's EXTERNALLY-MANAGED marker.

    Without ``venv_module`` it behaves like Debian's python3 without python3-venv: `-m venv` fails.
    """
    home = tmp_path / "managed"
    stdlib = Path(sysconfig.get_path("stdlib"))
    lib = home / stdlib.relative_to(Path(sys.base_prefix))
    lib.mkdir(parents=True, exist_ok=True)
    for entry in stdlib.iterdir():
        if not (lib / entry.name).exists():
            (lib / entry.name).symlink_to(entry)
    (lib / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=use apt or a virtualenv\n")
    script = tmp_path / ("python3" if venv_module else "python3-novenv")
    refuse = (
        'case "$*" in *"-m venv"*) echo "The virtual environment was not created successfully because '
        'ensurepip is not available." >&2; exit 1;; esac\n'
    )
    script.write_text(
        f'#!/bin/sh\n{"" if venv_module else refuse}exec env PYTHONHOME="{home}" "{REAL_PYTHON}" "$@"\n'
    )
    script.chmod(0o755)
    return script


def make(clone: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "CONDA_PREFIX", "MAKEFLAGS"}}
    return subprocess.run(
        ["make", "-C", str(clone), *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_a_python_that_refuses_pip_installs_into_dot_venv(tmp_path):
    clone = fresh_clone(tmp_path)
    python = managed_python(tmp_path)
    check = subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "codetune-nothing"], capture_output=True, text=True
    )
    assert "externally-managed-environment" in check.stderr + check.stdout  # pip really refuses it
    planned = make(clone, "-n", "install", f"PYTHON={python}")
    assert planned.returncode == 0, planned.stderr
    assert f"{python} -m venv --system-site-packages .venv" in planned.stdout  # an installed torch is reused
    assert ".venv/bin/python -m pip install -q -e" in planned.stdout
    assert f"{python} -m pip" not in planned.stdout  # never pip into the refusing Python
    for target, command in (
        ("test", ".venv/bin/python -m pytest"),
        ("quickstart", ".venv/bin/python -m codetune"),
    ):
        assert command in make(clone, "-n", target, f"PYTHON={python}").stdout


def test_a_python_that_accepts_pip_is_used_as_it_is(tmp_path):
    """CI and pyenv users: no virtualenv, the torch already installed is kept (no reinstall)."""
    clone = fresh_clone(tmp_path)
    planned = make(clone, "-n", "install", f"PYTHON={REAL_PYTHON}")
    assert planned.returncode == 0, planned.stderr
    assert ".venv" not in planned.stdout
    assert f"{REAL_PYTHON} -m pip install -q -e" in planned.stdout
    assert "-c constraints.txt" in planned.stdout  # only taken where torch is missing


def test_without_the_venv_module_one_line_says_what_to_install(tmp_path):
    clone = fresh_clone(tmp_path)
    python = managed_python(tmp_path, venv_module=False)
    result = make(clone, "install", f"PYTHON={python}")
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "python3-venv" in ours[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (clone / ".venv").exists()


@pytest.mark.slow
def test_the_venv_it_makes_reuses_the_installed_torch(tmp_path):
    clone = fresh_clone(tmp_path)
    python = managed_python(tmp_path)
    made = make(clone, ".venv/bin/python", f"PYTHON={python}")
    assert made.returncode == 0, made.stderr
    probe = subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-c", "import sys, torch, pip; print(sys.prefix)"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONHOME"},
    )
    assert probe.returncode == 0, probe.stderr  # torch comes from the system site-packages, pip is there
    assert Path(probe.stdout.strip()).resolve() == (clone / ".venv").resolve()
    again = make(clone, "-n", "install", f"PYTHON={python}")
    assert "-m venv" not in again.stdout and ".venv/bin/python -m pip install" in again.stdout
