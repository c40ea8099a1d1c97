"""The run folder `codetune train` writes and `merge`, `eval`, `generate` and `serve` read.

manifest.json (model, method, dataset, kind, fingerprint, finished, config, summary), the
deliverable: adapter/ (a peft adapter) or model/ (a full Hugging Face model), tokenizer/ (the
one training used), metrics.jsonl (one JSON row per logged step or eval), loss.png, and
checkpoints/step-N/ + checkpoints/best/ while training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.artifacts.manifest import has_manifest, read_manifest, write_manifest
from codetune.artifacts.paths import (
    ADALORA_RANKS,
    ADAPTER,
    ADAPTER_CONFIG,
    BEST_CHECKPOINT,
    CHECKPOINT_CHECKSUMS,
    CHECKPOINT_GLOB,
    CHECKPOINT_METHOD,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_RNG,
    CHECKPOINT_SCHEDULER,
    CHECKPOINT_STATE,
    CHECKPOINT_WEIGHTS,
    CHECKPOINTS,
    METRICS,
    MODEL,
    TOKENIZER,
    checkpoint_name,
)
from codetune.errors import InputError
from codetune.files import atomic_dir, atomic_write_text, read_json, write_json

logger = logging.getLogger(__name__)
HINT = "unfinished run? resume it with `codetune train --resume`"


@dataclass(frozen=True)
class RunFolder:
    """A finished (or finishing) run folder as read back."""

    path: Path
    manifest: dict[str, Any]

    @property
    def adapter(self) -> Path | None:
        folder = self.path / ADAPTER
        return folder if folder.is_dir() else None

    @property
    def model(self) -> Path | None:
        """The full fine-tune's model folder; None for an adapter run."""
        folder = self.path / MODEL
        return folder if folder.is_dir() and self.adapter is None else None

    @property
    def tokenizer(self) -> Path | None:
        folder = self.path / TOKENIZER
        return folder if folder.is_dir() else None

    @property
    def base(self) -> str:
        """The model the run started from, as the user named it."""
        return self.manifest["model"]

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)


def is_run(folder: str | Path) -> bool:
    """Whether ``folder`` looks like a run folder: a manifest and an adapter/ or model/ folder."""
    folder = Path(folder)
    return (
        folder.is_dir()
        and has_manifest(folder)
        and ((folder / ADAPTER).is_dir() or (folder / MODEL).is_dir())
    )


def read_run(folder: str | Path) -> RunFolder:
    """Read a run folder, with clear errors for no folder, no or a corrupt manifest, no weights.

    An adapter run must have adapter/adapter_config.json and name its base model in the manifest.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"run folder not found: {folder}")
    manifest = read_manifest(folder, "run folder from `codetune train`")
    adapter, model = folder / ADAPTER, folder / MODEL
    if adapter.is_dir():
        if not (adapter / ADAPTER_CONFIG).is_file():
            raise InputError(f"{adapter} has no {ADAPTER_CONFIG}: the adapter is incomplete ({HINT})")
        if not isinstance(manifest.get("model"), str) or not manifest["model"].strip():
            raise InputError(f"{folder}'s manifest does not name the base model the adapter was trained on")
    elif not model.is_dir():
        raise InputError(f"{folder} has no {ADAPTER}/ or {MODEL}/ ({HINT})")
    return RunFolder(folder, manifest)


def adapter_folder(path: str | Path) -> tuple[Path, Path | None]:
    """(the adapter folder, the run's tokenizer folder or None) of a run folder or a bare adapter folder."""
    given = path = Path(path)
    tokenizer = None
    if (path / ADAPTER).is_dir():
        tokenizer = path / TOKENIZER if (path / TOKENIZER).is_dir() else None
        path = path / ADAPTER
    if not (path / ADAPTER_CONFIG).is_file():
        raise InputError(f"no adapter found at {given} (expected a run folder or an adapter folder)")
    return path, tokenizer


def read_adapter_config(adapter: str | Path) -> dict[str, Any]:
    """An adapter folder's adapter_config.json (peft's settings: rank, target and saved modules)."""
    path = Path(adapter) / ADAPTER_CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no adapter found at {adapter} (no {ADAPTER_CONFIG})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is corrupt (not valid JSON: {error})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is corrupt (expected a JSON object)")
    return data


def weights_folder(run: str | Path, peft: bool) -> Path:
    """Where a run's deliverable goes: adapter/ for a peft method, model/ for a full fine-tune."""
    return Path(run) / (ADAPTER if peft else MODEL)


def write_run_manifest(run: str | Path, manifest: dict[str, Any]) -> Path:
    return write_manifest(run, manifest)


def read_run_manifest(run: str | Path) -> dict[str, Any]:
    """The manifest of a run folder that may still be training (no weights needed)."""
    return read_manifest(run, "run folder from `codetune train`")


# ---------------------------------------------------------------------------------------- metrics


def append_metrics(run: str | Path, row: dict[str, Any]) -> None:
    """Append one row to metrics.jsonl, flushed to disk (a kill loses at most this row)."""
    with open(Path(run) / METRICS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl ([] when there is none); a torn last line from a kill is skipped."""
    path = Path(run) / METRICS
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d is not valid JSON; skipped", path, number)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_metrics(run: str | Path, step: int) -> None:
    """On resume, drop the rows of steps after the checkpoint (they will be redone)."""
    path = Path(run) / METRICS
    if not path.is_file():
        return
    keep = [row for row in read_metrics(run) if row.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in keep))


def clear_metrics(run: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (Path(run) / METRICS).unlink()


# ------------------------------------------------------------------------------------ checkpoints


def checkpoints(run: str | Path) -> list[Path]:
    """The resumable checkpoints (checkpoints/step-N/) of a run, oldest first."""
    found = [
        p for p in (Path(run) / CHECKPOINTS).glob(CHECKPOINT_GLOB) if p.name[5:].isdigit() and p.is_dir()
    ]
    return sorted(found, key=lambda p: int(p.name[5:]))


def checkpoint_folder(run: str | Path, step: int) -> Path:
    return Path(run) / CHECKPOINTS / checkpoint_name(step)


def best_checkpoint(run: str | Path) -> Path:
    """Where the best weights so far are kept (by eval loss) while training."""
    return Path(run) / CHECKPOINTS / BEST_CHECKPOINT


# A checkpoint's parts, each a torch.save'd object; "method" only for methods that keep state.
# Every part loads with torch.load(weights_only=True): tensors, numbers, strings and containers of them
# only, so a planted file can never run code (a pickle's __reduce__) when a run resumes.
_CHECKPOINT_PARTS = {
    "weights": CHECKPOINT_WEIGHTS,
    "optimizer": CHECKPOINT_OPTIMIZER,
    "scheduler": CHECKPOINT_SCHEDULER,
    "rng": CHECKPOINT_RNG,
    "method": CHECKPOINT_METHOD,
}
_REQUIRED_PARTS = ("weights", "optimizer", "scheduler", "rng")
# The training state (state.json) a resumed loop needs, with the types it must have.
_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "step": (int,),
    "epoch": (int,),
    "batch": (int,),
    "tokens": (int,),
    "best_eval": (float, int, type(None)),
    "best_step": (int, type(None)),
    "bad_evals": (int,),
}


class DamagedCheckpoint(InputError):
    """A checkpoint that cannot be trusted: a file missing, truncated, changed or not loadable."""


def write_checkpoint(folder: str | Path, parts: dict[str, Any], state: dict[str, Any]) -> None:
    """Write a resumable checkpoint atomically (a kill leaves the previous one): the torch
    objects in ``parts`` (weights, optimizer, scheduler, rng, optionally method) and ``state``,
    then, last, the size and sha256 of each file (``read_checkpoint`` checks them)."""
    import torch

    if unknown := set(parts) - set(_CHECKPOINT_PARTS):
        raise ValueError(f"unknown checkpoint parts: {sorted(unknown)}")
    with atomic_dir(Path(folder)) as tmp:
        for part, value in parts.items():
            torch.save(value, tmp / _CHECKPOINT_PARTS[part])
        write_json(tmp / CHECKPOINT_STATE, state)
        write_json(tmp / CHECKPOINT_CHECKSUMS, {path.name: _checksum(path) for path in sorted(tmp.iterdir())})


def _checksum(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def verify_checkpoint(folder: str | Path) -> None:
    """Raise DamagedCheckpoint unless every file checksums.json lists is there, whole and unchanged."""
    folder = Path(folder)
    try:
        listed = read_json(folder / CHECKPOINT_CHECKSUMS)
    except FileNotFoundError:
        raise DamagedCheckpoint(
            f"no {CHECKPOINT_CHECKSUMS} (unfinished, or written by an older codetune)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DamagedCheckpoint(f"{CHECKPOINT_CHECKSUMS} is not valid JSON ({error})") from None
    if not isinstance(listed, dict) or not all(isinstance(entry, dict) for entry in listed.values()):
        raise DamagedCheckpoint(f"{CHECKPOINT_CHECKSUMS} is not a checksum list")
    for name in (CHECKPOINT_STATE, *(_CHECKPOINT_PARTS[part] for part in _REQUIRED_PARTS)):
        if name not in listed:
            raise DamagedCheckpoint(f"{CHECKPOINT_CHECKSUMS} does not list {name}")
    for name, expected in listed.items():
        path = folder / name
        if Path(name).name != name or not path.is_file():
            raise DamagedCheckpoint(f"{name} is missing")
        if path.stat().st_size != expected.get("bytes"):
            raise DamagedCheckpoint(
                f"{name} has {path.stat().st_size} bytes, {expected.get('bytes')} written"
            )
        if _checksum(path)["sha256"] != expected.get("sha256"):
            raise DamagedCheckpoint(f"{name} changed since it was written (sha256 differs)")


def read_checkpoint(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """What write_checkpoint wrote: (parts, state), verified and loaded without running any code;
    DamagedCheckpoint (saying what is wrong) otherwise. A part that was not written is absent."""
    import pickle

    import torch

    folder = Path(folder)
    verify_checkpoint(folder)
    parts = {}
    for part, name in _CHECKPOINT_PARTS.items():
        if not (folder / name).is_file():
            continue
        try:
            parts[part] = torch.load(folder / name, weights_only=True, map_location="cpu")
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, OSError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DamagedCheckpoint(f"{name} does not load as tensors and numbers ({reason})") from None
    try:
        state = read_json(folder / CHECKPOINT_STATE)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DamagedCheckpoint(f"{CHECKPOINT_STATE} is not valid JSON ({error})") from None
    if not isinstance(state, dict):
        raise DamagedCheckpoint(f"{CHECKPOINT_STATE} is not a JSON object")
    for key, types in _STATE_TYPES.items():
        value = state.get(key)
        if not isinstance(value, types) or isinstance(value, bool) or (value is not None and value != value):
            raise DamagedCheckpoint(f"{CHECKPOINT_STATE}: {key} is {value!r}, not a {types[0].__name__}")
    return parts, state


def newest_intact_checkpoint(run: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
    """(folder, parts, state) of the newest checkpoint that reads back whole; a warning names each
    newer one skipped and why. None when the run has no checkpoint; InputError when none is intact."""
    skipped = []
    for folder in reversed(checkpoints(run)):
        try:
            parts, state = read_checkpoint(folder)
        except DamagedCheckpoint as error:
            logger.warning("checkpoint %s skipped: %s", folder, error)
            skipped.append(f"{folder.name}: {error}")
            continue
        return folder, parts, state
    if skipped:
        raise InputError(
            f"no intact checkpoint to resume in {Path(run) / CHECKPOINTS} ({'; '.join(skipped)}); "
            "start the run again in a new --out"
        )
    return None


def write_adalora_ranks(run: str | Path, ranks: dict[str, int]) -> None:
    write_json(Path(run) / ADALORA_RANKS, ranks)
