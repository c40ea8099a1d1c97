"""manifest.json: every stage output's record of what made it (config, inputs, fingerprint, summary).

A folder output keeps it inside (``OUT/manifest.json``); a file output beside it
(``OUT.jsonl.manifest.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codetune.artifacts.paths import MANIFEST, SIDECAR_MANIFEST_SUFFIX, TOKENIZER_RECORD
from codetune.errors import InputError
from codetune.files import read_json_object, write_json


def manifest_path(out: str | Path) -> Path:
    """Where the manifest of the output ``out`` lives (inside a folder, beside a file)."""
    out = Path(out)
    if out.suffix == "" or out.is_dir():
        return out / MANIFEST
    return out.with_name(out.name + SIDECAR_MANIFEST_SUFFIX)


def has_manifest(out: str | Path) -> bool:
    return manifest_path(out).is_file()


def read_manifest(out: str | Path, what: str = "stage output", hint: str = "") -> dict[str, Any]:
    """The manifest of ``out`` as a dict; a clear InputError when it is missing or not a JSON object."""
    path = manifest_path(out)
    suffix = f"; {hint}" if hint else ""
    if not path.is_file():
        raise InputError(f"{out} is not a {what} (no {path.name}){suffix}")
    return read_json_object(path, hint)


def manifest_value(out: str | Path, key: str = "fingerprint") -> Any:
    """One key of ``out``'s manifest, or None when there is no readable manifest (for skip-if-unchanged)."""
    try:
        return read_manifest(out).get(key)
    except InputError:
        return None


def manifest_fingerprint(out: str | Path) -> str | None:
    """The ``fingerprint`` recorded in a stage output's manifest, or None when absent."""
    return manifest_value(out, "fingerprint")


def write_manifest(out: str | Path, data: dict[str, Any]) -> Path:
    """Write ``out``'s manifest atomically."""
    return write_json(manifest_path(out), data)


def update_manifest(out: str | Path, **changes: Any) -> dict[str, Any]:
    """Read, update and rewrite ``out``'s manifest (an empty one when there is none yet)."""
    data = read_manifest(out) if has_manifest(out) else {}
    data.update(changes)
    write_manifest(out, data)
    return data


def check_output_folder(out: str | Path, flag: str = "--out", stage: str | None = None) -> None:
    """Refuse an output folder whose replacement would destroy what this stage did not write.

    A stage replaces its output folder whole. That is safe for a missing or empty folder (hidden
    files aside) and for an earlier output of the same stage (its manifest.json names the stage;
    a tokenizer folder holds its record instead), but not for a file, a folder of the user's own
    files (a project given as --out), or another stage's output, such as the stage's own input.
    """
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"{flag} {out} is a file, not a folder; give a new or empty folder")
    if (out / MANIFEST).is_file():
        try:
            made_by = read_json_object(out / MANIFEST).get("stage")
        except InputError:
            made_by = None
        if stage is None or made_by == stage:
            return
        kind = f"the output of codetune {made_by}" if made_by else "a codetune training run"
        raise InputError(
            f"{flag} {out} holds {kind}, which writing the {stage} output there would replace; "
            "give a new or empty folder"
        )
    if (out / TOKENIZER_RECORD).is_file() and stage in (None, "tokenizer"):
        return
    own = sorted(p.name for p in out.iterdir() if p.is_dir() or not p.name.startswith("."))
    if own:
        listed = ", ".join(own[:3]) + (f" and {len(own) - 3} more" if len(own) > 3 else "")
        raise InputError(
            f"{flag} {out} is a folder codetune did not write (it holds {listed}), and writing there "
            "would replace it; give a new or empty folder"
        )
