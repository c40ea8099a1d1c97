"""The on-disk artefacts stages hand each other, each with its path names, schema, one reader, one writer.

corpus (collect -> build), dataset (build -> train, eval), run folder (train -> merge, eval,
generate, serve), report (eval), and the manifest.json every output carries. Nothing outside
this package spells these file names or parses these formats.
"""

from codetune.artifacts.corpus import is_corpus, read_corpus, write_corpus
from codetune.artifacts.dataset import DatasetFolder, read_dataset, read_stats, write_dataset
from codetune.artifacts.manifest import (
    check_output_folder,
    manifest_fingerprint,
    manifest_path,
    read_manifest,
    update_manifest,
    write_manifest,
)
from codetune.artifacts.report import read_report, write_report
from codetune.artifacts.run import RunFolder, adapter_folder, is_run, read_metrics, read_run

__all__ = [
    "DatasetFolder",
    "RunFolder",
    "adapter_folder",
    "check_output_folder",
    "is_corpus",
    "is_run",
    "manifest_fingerprint",
    "manifest_path",
    "read_corpus",
    "read_dataset",
    "read_manifest",
    "read_metrics",
    "read_report",
    "read_run",
    "read_stats",
    "update_manifest",
    "write_corpus",
    "write_dataset",
    "write_manifest",
    "write_report",
]
