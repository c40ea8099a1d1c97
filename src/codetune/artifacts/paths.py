"""The file and folder names of every on-disk artefact: the only place they are spelled.

A corpus folder (`codetune collect`):  manifest.json, data-00000-of-00001.parquet, ...
A dataset folder (`codetune build`):   dataset_dict.json + one folder per split (datasets.save_to_disk),
                                       stats.json, manifest.json, tokenizer/, lengths.png
A run folder (`codetune train`):       manifest.json, adapter/ (peft) or model/ (full), tokenizer/,
                                       metrics.jsonl, loss.png, adalora_ranks.json (AdaLoRA),
                                       checkpoints/step-N/ and checkpoints/best/, each holding
                                       weights.pt, optimizer.pt, scheduler.pt, rng.pt, method.pt
                                       (when the method keeps state), state.json and, written
                                       last, checksums.json
A report folder (`codetune eval`):     report.json, report.md, predictions.jsonl, metrics.png, loss.png,
                                       manifest.json
A file output (`codetune generate`):   OUT.jsonl with its manifest beside it, OUT.jsonl.manifest.json
A tokenizer folder (`codetune tokenizer train`): transformers' tokenizer files, codetune_tokenizer.json
A records folder (`codetune serve --record`, `codetune records import-continue`):
                                       records-YYYY-MM-DD.jsonl, one per day (UTC)
"""

from __future__ import annotations

MANIFEST = "manifest.json"
SIDECAR_MANIFEST_SUFFIX = ".manifest.json"

# tokenizer (`codetune tokenizer train`): what it was trained on
TOKENIZER_RECORD = "codetune_tokenizer.json"

# corpus
CORPUS_SHARD_GLOB = "data-*.parquet"
ANY_PARQUET_GLOB = "*.parquet"
REJECTED_INDEX = "rejected.jsonl"

# dataset
DATASET_DICT = "dataset_dict.json"  # written by datasets.DatasetDict.save_to_disk
STATS = "stats.json"
TOKENIZER = "tokenizer"
LENGTHS_PLOT = "lengths.png"

# run
ADAPTER = "adapter"
MODEL = "model"
ADAPTER_CONFIG = "adapter_config.json"  # written by peft's save_pretrained
CHECKPOINTS = "checkpoints"
BEST_CHECKPOINT = "best"
CHECKPOINT_GLOB = "step-*"
METRICS = "metrics.jsonl"
LOSS_PLOT = "loss.png"
ADALORA_RANKS = "adalora_ranks.json"
# inside a resumable checkpoint (checkpoints/step-N/)
CHECKPOINT_WEIGHTS = "weights.pt"
CHECKPOINT_OPTIMIZER = "optimizer.pt"
CHECKPOINT_SCHEDULER = "scheduler.pt"
CHECKPOINT_RNG = "rng.pt"
CHECKPOINT_METHOD = "method.pt"
CHECKPOINT_STATE = "state.json"
CHECKPOINT_CHECKSUMS = "checksums.json"  # written last: the size and sha256 of every other file

# records (what editors were suggested and what developers kept)
RECORDS_GLOB = "records-*.jsonl"
# how far `serve --continue-log` has read Continue's dev-data file (kept in the records folder)
CONTINUE_POSITION = ".continue-position.json"

# report
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PREDICTIONS = "predictions.jsonl"
METRICS_PLOT = "metrics.png"


def corpus_shard_name(index: int, count: int) -> str:
    """The name of shard ``index`` of ``count`` (sorted by name = read order)."""
    return f"data-{index:05d}-of-{count:05d}.parquet"


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def records_file_name(day: str) -> str:
    """The records file of one UTC day (``YYYY-MM-DD``)."""
    return f"records-{day}.jsonl"
