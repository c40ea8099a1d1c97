"""`make quickstart` / `make test` on a fresh clone where the system Python refuses pip (PEP 668)."""

from __future__ import annotations

import json
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
    """A clone as CI makes it, carrying this tree's Makefile and lock (which may not be committed yet)."""
    clone = tmp_path / "clone"
    if (ROOT / ".git").exists() and shutil.which("git"):
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", f"file://{ROOT}", str(clone)], check=True)
    else:
        clone.mkdir()
    for name in ("Makefile", "constraints.txt", "pyproject.toml", ".ci/lock.py"):
        (clone / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, clone / name)
    return clone


def base_site_dirs() -> tuple[Path, list[Path]]:
    """The base interpreter's prefix and its global site-packages folders, asked of it directly.

    Debian keeps pip and every apt-installed package outside the stdlib (/usr/lib/python3/dist-packages).
    """
    probe = subprocess.run(
        [
            REAL_PYTHON,
            "-c",
            "import json, site, sys; print(json.dumps([sys.prefix, site.getsitepackages()]))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    prefix, dirs = json.loads(probe.stdout)
    return Path(prefix), [Path(d) for d in dirs if Path(d).is_dir()]


def managed_python(tmp_path: Path, *, venv_module: bool = True, refuses_pip: bool = True) -> Path:
    """This Python, seen through a stdlib folder that carries PEP 668's EXTERNALLY-MANAGED marker.

    Its global site-packages are those of the base interpreter (pip included, wherever the platform
    keeps it). Without ``venv_module`` it behaves like Debian's python3 without python3-venv: `-m venv`
    fails. Without ``refuses_pip`` the marker is left out: a Python that accepts pip (pyenv, CI).
    """
    home = tmp_path / ("managed" if refuses_pip else "accepting")
    stdlib = Path(sysconfig.get_path("stdlib"))
    lib = home / stdlib.relative_to(Path(sys.base_prefix))
    lib.mkdir(parents=True, exist_ok=True)
    for entry in stdlib.iterdir():
        if not (lib / entry.name).exists() and entry.name != "EXTERNALLY-MANAGED":
            (lib / entry.name).symlink_to(entry)
    prefix, site_dirs = base_site_dirs()
    for folder in site_dirs:
        if folder.is_relative_to(prefix) and not (home / folder.relative_to(prefix)).exists():
            (home / folder.relative_to(prefix)).parent.mkdir(parents=True, exist_ok=True)
            (home / folder.relative_to(prefix)).symlink_to(folder)
    if refuses_pip:
        (lib / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=use apt or a virtualenv\n")
    script = tmp_path / f"python3-{home.name}{'' if venv_module else '-novenv'}"
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
    assert ".venv/bin/python -m pip install -q -c constraints.txt -e" in planned.stdout
    assert f"{python} -m pip" not in planned.stdout  # never pip into the refusing Python
    for target, command in (
        ("test", ".venv/bin/python -m pytest"),
        ("quickstart", ".venv/bin/python -m codetune"),
    ):
        assert command in make(clone, "-n", target, f"PYTHON={python}").stdout


def test_a_python_that_accepts_pip_is_used_as_it_is(tmp_path):
    """CI and pyenv users: no virtualenv; the locked versions, but a torch already installed is kept."""
    clone = fresh_clone(tmp_path)
    python = managed_python(tmp_path, refuses_pip=False)
    planned = make(clone, "-n", "install", f"PYTHON={python}")
    assert planned.returncode == 0, planned.stderr
    assert ".venv" not in planned.stdout
    assert f"{python} -m pip install -q -c constraints.txt -e" in planned.stdout  # where torch is missing
    assert "lock.py --keep-torch constraints.txt" in planned.stdout  # the torch pin left out where it is not


def test_test_installs_again_only_when_pyproject_or_constraints_change(tmp_path):
    clone = fresh_clone(tmp_path)
    python = managed_python(tmp_path, refuses_pip=False)

    def installs() -> bool:
        planned = make(clone, "-n", "test", f"PYTHON={python}")
        assert planned.returncode == 0 and f"{python} -m pytest" in planned.stdout, planned.stderr
        return "pip install" in planned.stdout

    assert installs()  # never installed from this clone
    done = make(clone, "install", f"PYTHON={python}", "PIP=true")  # the install recipe, pip left out
    assert done.returncode == 0, done.stderr
    assert not installs()
    (stamp,) = clone.glob(".make/*/.codetune-installed")
    for name in ("pyproject.toml", "constraints.txt"):
        earlier = (clone / name).stat().st_mtime - 10
        os.utime(stamp, (earlier, earlier))  # as if the file had changed since the install
        assert installs(), name
        assert make(clone, "install", f"PYTHON={python}", "PIP=true").returncode == 0
        assert not installs(), name


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
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHOME"}
    code = "import importlib.util, sys, pip; print(sys.prefix, importlib.util.find_spec('torch') is not None)"
    probe = subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-c", code], capture_output=True, text=True, env=env
    )
    assert probe.returncode == 0, probe.stderr  # pip is there
    prefix, has_torch = probe.stdout.split()
    assert Path(prefix).resolve() == (clone / ".venv").resolve()
    base = subprocess.run([REAL_PYTHON, "-c", code], capture_output=True, text=True, env=env)
    assert has_torch == base.stdout.split()[1]  # the system's torch (if it has one) is reused
    again = make(clone, "-n", "install", f"PYTHON={python}")
    assert "-m venv" not in again.stdout and ".venv/bin/python -m pip install" in again.stdout
