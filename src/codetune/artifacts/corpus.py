"""The corpus folder `codetune collect` writes and `build` / `tokenizer` / `export-doccano` read.

Parquet shards named ``data-NNNNN-of-NNNNN.parquet`` (one schema, below) and a manifest.json
listing the shards, the sources, the counts per drop reason and the config that made them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from codetune.artifacts.manifest import check_output_folder, manifest_value, read_manifest, write_manifest
from codetune.artifacts.paths import ANY_PARQUET_GLOB, CORPUS_SHARD_GLOB, MANIFEST, corpus_shard_name
from codetune.errors import InputError
from codetune.files import atomic_dir

# (name, Arrow type name) per column, in file order; every shard has exactly these.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("path", "string"),
    ("repo", "string"),
    ("language", "string"),
    ("content", "string"),
    ("bytes", "int64"),
    ("lines", "int64"),
    ("sha256", "string"),
    ("source", "string"),
    ("kind", "string"),  # "code" or "docs"
    ("licence_stripped", "bool"),
    ("redactions", "int64"),  # secrets replaced in this file
    ("heading", "string"),  # docs rows: the section heading
    ("prose", "string"),  # docs rows: the text around the code
    ("url", "string"),  # docs rows: where the page was
)
# What a reader needs; shards made by hand (tests, older versions) may lack the rest.
REQUIRED = ("path", "content")
HINT = "run `codetune collect` first"


def schema() -> Any:
    """The pyarrow schema of a corpus shard."""
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_()}
    return pa.schema([(name, types[kind]) for name, kind in COLUMNS])


def shard_count(rows: int, shard_rows: int) -> int:
    """How many shards ``rows`` rows take (at least one, so an empty corpus still has a schema)."""
    return max(1, -(-rows // shard_rows))


def write_corpus(
    out: str | Path, rows: Sequence[dict[str, Any]], manifest: dict[str, Any], shard_rows: int
) -> Path:
    """Write the shards and the manifest (its ``shards`` filled in) as one atomic folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow_schema = schema()
    count = shard_count(len(rows), shard_rows)
    with atomic_dir(out, check=partial(check_output_folder, stage="collect")) as tmp:
        names = []
        for index in range(count):
            chunk = rows[index * shard_rows : (index + 1) * shard_rows]
            columns = {name: [row.get(name) for row in chunk] for name, _ in COLUMNS}
            name = corpus_shard_name(index, count)
            pq.write_table(pa.table(columns, schema=arrow_schema), tmp / name)
            names.append(name)
        write_manifest(tmp, {**manifest, "shards": names})
    return Path(out)


def is_corpus(path: str | Path) -> bool:
    """Whether ``path`` is meant as a corpus folder (Parquet shards, or collect's manifest) rather than records."""
    path = Path(path)
    if not path.is_dir():
        return False
    return any(path.glob(ANY_PARQUET_GLOB)) or manifest_value(path, "stage") == "collect"


def corpus_shards(folder: str | Path) -> list[Path]:
    """The shard files of a corpus, in read order, after checking the folder is a whole corpus."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"corpus not found: {folder}")
    if not folder.is_dir():
        raise InputError(
            f"corpus must be a folder of Parquet shards (written by `codetune collect`): {folder}"
        )
    found = sorted(folder.glob(CORPUS_SHARD_GLOB)) or sorted(folder.glob(ANY_PARQUET_GLOB))
    if not found:
        raise InputError(f"{folder} is not a corpus folder: no corpus shards (data-*.parquet); {HINT}")
    manifest = read_manifest(folder, "corpus folder", HINT)
    if manifest.get("stage") not in (None, "collect"):
        raise InputError(f"{folder} is a `codetune {manifest['stage']}` output, not a corpus; {HINT}")
    listed = manifest.get("shards")
    if not isinstance(listed, list):
        return found
    missing = [name for name in listed if not (folder / str(name)).is_file()]
    if missing:
        raise InputError(
            f"corpus {folder} is incomplete: shard(s) {', '.join(map(str, missing))} listed in its "
            f"{MANIFEST} are missing; collect it again"
        )
    return [folder / str(name) for name in listed]


def read_corpus(folder: str | Path, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every row of a corpus as a dict (all columns, or ``columns``), in shard order.

    Errors clearly for a missing folder, no shards, no or a corrupt manifest, a listed shard
    missing, an unreadable shard, or a shard without the path/content columns.
    """
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for shard in corpus_shards(folder):
        try:
            table = pq.read_table(shard)
        except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ...
            raise InputError(f"cannot read corpus shard {shard}: {error}") from None
        missing = [c for c in (*REQUIRED, *(columns or ())) if c not in table.column_names]
        if missing:
            raise InputError(f"corpus shard {shard} lacks column(s) {', '.join(dict.fromkeys(missing))}")
        if columns is not None:
            table = table.select(list(columns))
        rows.extend(table.to_pylist())
    return rows
