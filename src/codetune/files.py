"""Atomic outputs: a killed job never leaves a half-written file or folder (artefact formats: codetune.artifacts)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically, pretty-printed so a person can read it."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_object(path: str | Path, hint: str = "") -> dict[str, Any]:
    """A JSON file holding one object; InputError ``PATH is corrupt (...)`` (then ``hint``) otherwise."""
    from codetune.errors import InputError

    suffix = f"; {hint}" if hint else ""
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is corrupt (not valid JSON: {error}){suffix}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is corrupt (expected a JSON object, got {type(data).__name__}){suffix}")
    return data


@contextlib.contextmanager
def atomic_dir(
    path: str | Path, *, overwrite: bool = True, check: Callable[[Path], None] | None = None
) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path``, on failure it is removed.

    ``check(path)`` runs before the folder is made and again before it replaces ``path``: it raises
    when ``path`` holds something that must not be replaced (a user's own files).
    """
    path = Path(path)
    if check is not None:
        check(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if check is not None:
        try:
            check(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if path.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(path)
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def fingerprint(*parts: Any) -> str:
    """A stable short hash of JSON-able parts (configs, input manifests) for skip-if-unchanged."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
