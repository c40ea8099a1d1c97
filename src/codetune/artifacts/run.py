"""The run folder `codetune train` writes and `merge`, `eval`, `generate` and `serve` read.

manifest.json (model, method, dataset, kind, fingerprint, finished, config, summary), the
deliverable: adapter/ (a peft adapter) or model/ (a full Hugging Face model), tokenizer/ (the
one training used), metrics.jsonl (one JSON row per logged step or eval), loss.png, and
checkpoints/step-N/ + checkpoints/best/ while training.
"""

from __future__ import annotations

import contextlib
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
    found = (Path(run) / CHECKPOINTS).glob(CHECKPOINT_GLOB)
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def checkpoint_folder(run: str | Path, step: int) -> Path:
    return Path(run) / CHECKPOINTS / checkpoint_name(step)


def best_checkpoint(run: str | Path) -> Path:
    """Where the best weights so far are kept (by eval loss) while training."""
    return Path(run) / CHECKPOINTS / BEST_CHECKPOINT


# A checkpoint's parts, each a torch.save'd object; "method" only for methods that keep state.
_CHECKPOINT_PARTS = {
    "weights": CHECKPOINT_WEIGHTS,
    "optimizer": CHECKPOINT_OPTIMIZER,
    "scheduler": CHECKPOINT_SCHEDULER,
    "rng": CHECKPOINT_RNG,
    "method": CHECKPOINT_METHOD,
}


def write_checkpoint(folder: str | Path, parts: dict[str, Any], state: dict[str, Any]) -> None:
    """Write a resumable checkpoint atomically (a kill leaves the previous one): the torch
    objects in ``parts`` (weights, optimizer, scheduler, rng, optionally method) and ``state``."""
    import torch

    if unknown := set(parts) - set(_CHECKPOINT_PARTS):
        raise ValueError(f"unknown checkpoint parts: {sorted(unknown)}")
    with atomic_dir(Path(folder)) as tmp:
        for part, value in parts.items():
            torch.save(value, tmp / _CHECKPOINT_PARTS[part])
        write_json(tmp / CHECKPOINT_STATE, state)


def read_checkpoint(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """What write_checkpoint wrote: (parts, state); a part that was not written is absent."""
    import torch

    folder = Path(folder)
    if not (folder / CHECKPOINT_STATE).is_file():
        raise InputError(f"{folder} is not a complete checkpoint ({CHECKPOINT_STATE} missing)")
    # our own files, so weights_only=False: the optimizer and RNG states hold non-tensors
    parts = {
        part: torch.load(folder / name, weights_only=False)
        for part, name in _CHECKPOINT_PARTS.items()
        if (folder / name).is_file()
    }
    return parts, read_json(folder / CHECKPOINT_STATE)


def write_adalora_ranks(run: str | Path, ranks: dict[str, int]) -> None:
    write_json(Path(run) / ADALORA_RANKS, ranks)
