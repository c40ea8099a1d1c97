"""constraints.txt, the lock every `make` install uses.

`lock.py constraints.txt` (run by `make lock`, in a fresh virtualenv holding `pip install -e ".[dev]"`
and nothing else) rewrites it from the packages installed in this Python. Each pin carries a marker
for this Python version and platform: pip applies it only where the lock was resolved, and resolves
freely elsewhere. Pins of other Pythons (`make lock PYTHON=python3.12`) and the torch pin (the CPU
build the project's machines carry) are kept as they are.

`lock.py --keep-torch constraints.txt OUT` writes the lock as it applies where a torch is already
installed (a GPU user's CUDA build, kept): without the torch pin and without the pins of the packages
that torch itself requires (a torch release may pin, say, sympy exactly).
"""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
from importlib import metadata
from pathlib import Path

HEADER = """\
# Versions known to work, used by every `make` target that installs (see the Makefile). Refreshed on
# purpose with `make lock`, never by an install: each pin holds only on the Python and platform it was
# resolved on (its marker); elsewhere pip resolves freely. The torch pin brings the CPU build where no
# torch is installed; a torch that is already there (a GPU user's CUDA build) is kept.
"""
UNPINNED = {"codetune", "pip", "setuptools", "wheel", "torch"}  # torch keeps its own unconditional line


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def keep_torch(path: Path, out: Path) -> None:
    try:
        required = metadata.requires("torch") or []
    except metadata.PackageNotFoundError:
        required = []
    held = {"torch"} | {canonical(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in required}
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if canonical(re.split(r"[\s=<>!~;\[]", line, maxsplit=1)[0]) not in held]
    out.write_text("\n".join(kept) + "\n", encoding="utf-8")


def main(path: Path) -> None:
    marker = f'python_version == "{sys.version_info.major}.{sys.version_info.minor}" and sys_platform == "{sys.platform}"'
    old = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    torch = [line for line in old if line.startswith("torch==")]
    others = [
        line
        for line in old
        if not line.startswith("#") and ";" in line and line.split(";", 1)[1].strip() != marker
    ]
    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonical(name) not in UNPINNED:
            pins[canonical(name)] = f"{canonical(name)}=={dist.version} ; {marker}"
    if not pins:
        sys.exit("error: nothing installed to lock")
    lines = [HEADER.rstrip("\n"), *torch, *sorted(others), *(pins[name] for name in sorted(pins))]
    descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=".constraints-")
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    print(f"{path}: {len(pins)} pins for Python {platform.python_version()} on {sys.platform}")


if __name__ == "__main__":
    if sys.argv[1] == "--keep-torch":
        keep_torch(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main(Path(sys.argv[1]))
