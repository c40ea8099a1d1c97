"""The dataset folder `codetune build` writes and `train`, `eval`, `merge` and `train --dry-run` read.

``datasets.DatasetDict.save_to_disk`` (dataset_dict.json + one folder per split: train, valid,
test), stats.json (counts per split, how documents were split, FIM rate, warnings), the
tokenizer the examples were made with (tokenizer/), lengths.png and a manifest.json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from codetune.artifacts.manifest import check_output_folder, manifest_path, read_manifest, write_manifest
from codetune.artifacts.paths import DATASET_DICT, STATS, TOKENIZER
from codetune.errors import InputError
from codetune.files import atomic_dir, fingerprint, read_json_object, write_json

SPLITS = ("train", "valid", "test")
# A dataset with rows for several training objectives (`build --format feedback`: sft, kto, dpo)
# names each row's in this column; a method trains on its objective's rows (codetune.train.methods).
OBJECTIVE_COLUMN = "objective"
HINT = "run `codetune build` first"
# One Arrow shard per this many bytes of a split.
SHARD_BYTES = 500_000_000


@dataclass
class DatasetFolder:
    """A dataset folder as read back: its splits, stats.json, manifest and tokenizer folder."""

    path: Path
    splits: Any  # datasets.DatasetDict
    stats: dict[str, Any]
    manifest: dict[str, Any] | None

    @property
    def kind(self) -> str:
        """causal or seq2seq: as stats.json says, else from the columns (seq2seq rows have labels)."""
        if "kind" in self.stats:
            return self.stats["kind"]
        first = self.splits["train"] if "train" in self.splits else next(iter(self.splits.values()))
        return "seq2seq" if "labels" in first.column_names else "causal"

    @property
    def tokenizer(self) -> Path | None:
        """The tokenizer the examples were made with (it may carry added FIM tokens), when saved."""
        folder = self.path / TOKENIZER
        return folder if folder.is_dir() else None

    @property
    def fingerprint(self) -> str:
        """What identifies this dataset: its manifest's fingerprint, else a hash of stats.json as written."""
        recorded = (self.manifest or {}).get("fingerprint")
        return recorded or fingerprint(self.stats)

    @property
    def identity(self) -> dict[str, Any]:
        """What a run's fingerprint takes from its dataset: the manifest, else stats.json."""
        return self.manifest if self.manifest is not None else {**self.stats, "kind": self.kind}

    def split(self, name: str, *, nonempty: bool = False) -> Any:
        """One split, with a clear error when it is absent (or empty, when ``nonempty``)."""
        if name not in self.splits:
            raise InputError(
                f"dataset {self.path} has no {name} split (it has {', '.join(self.splits) or 'none'})"
            )
        if nonempty and len(self.splits[name]) == 0:
            raise InputError(f"dataset {self.path} has an empty {name} split")
        return self.splits[name]


def read_stats(folder: str | Path) -> dict[str, Any]:
    """A dataset folder's stats.json, with clear errors for a missing, foreign or corrupt folder."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"dataset folder not found: {folder}")
    if not folder.is_dir():
        raise InputError(f"{folder} is a file, not a dataset folder from `codetune build`")
    path = folder / STATS
    if not path.is_file():
        raise InputError(f"{folder} is not a dataset folder from `codetune build` (no {STATS}); {HINT}")
    return read_json_object(path, "build the dataset again")


def read_dataset(folder: str | Path) -> DatasetFolder:
    """Read a dataset folder: stats.json, the manifest (when present) and every split.

    Errors clearly for a missing folder, no or a corrupt stats.json, no splits (no
    dataset_dict.json), a split datasets cannot load, or a corrupt manifest.
    """
    folder = Path(folder)
    stats = read_stats(folder)
    if not (folder / DATASET_DICT).is_file():
        raise InputError(f"dataset {folder} has no splits (no {DATASET_DICT}); {HINT}")
    manifest = read_manifest(folder, "dataset folder", HINT) if manifest_path(folder).is_file() else None
    from datasets import DatasetDict, load_from_disk

    try:
        splits = load_from_disk(str(folder))
    except Exception as error:  # datasets raises FileNotFoundError, ValueError or its own types
        raise InputError(f"cannot read the splits of dataset {folder}: {error}") from None
    if not isinstance(splits, DatasetDict) or not splits:
        raise InputError(f"dataset {folder} has no splits; {HINT}")
    return DatasetFolder(folder, splits, stats, manifest)


def write_dataset(
    out: str | Path,
    splits: dict[str, Any],
    stats: dict[str, Any],
    manifest: dict[str, Any],
    *,
    tokenizer: Any = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write the splits, the tokenizer, stats.json and the manifest as one atomic folder.

    ``extra`` writes anything else (plots) into the folder before it is moved into place.
    """
    from datasets import DatasetDict

    with atomic_dir(out, check=partial(check_output_folder, stage="build")) as tmp:
        # An empty split needs an explicit shard count, or load_from_disk cannot read it back.
        shards = {name: int(ds.data.nbytes // SHARD_BYTES) + 1 for name, ds in splits.items()}
        DatasetDict(splits).save_to_disk(str(tmp), num_shards=shards)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp / TOKENIZER))
        if extra is not None:
            extra(tmp)
        write_json(tmp / STATS, stats)
        write_manifest(tmp, manifest)
    return Path(out)
