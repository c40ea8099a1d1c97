"""Under FSDP/ZeRO every process runs the same number of eval forwards, and resuming sharded state is
refused clearly instead of restoring one process's shard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codetune.errors import ConfigError
from codetune.train import recipe
from codetune.train.config import TrainConfig
from codetune.train.recipe import shard_evenly, train


@pytest.mark.parametrize(("batches", "world"), [(5, 2), (7, 3), (2, 4), (6, 3), (1, 2)])
def test_eval_shards_are_even_and_count_each_batch_once(batches: int, world: int) -> None:
    plan = [[i] for i in range(batches)]
    shards = [shard_evenly(plan, rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1  # no process waits for a forward the others skip
    counted = sorted(b[0] for s in shards for b, keep in s if keep)
    assert counted == list(range(batches))


def test_sharded_resume_is_refused(causal_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(recipe, "sharded_state", lambda accelerator: "DeepSpeed ZeRO-3")
    run = tmp_path / "run"
    settings = {"max_steps": 4, "batch_tokens": 128, "save_every": 2, "eval_every": 4}
    train(TrainConfig(model="tiny-llama", dataset=causal_dataset, out=run, **settings))
    assert not list((run / "checkpoints").glob("step-*"))  # a main-process copy would be one shard
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "finished": False}))
    with pytest.raises(ConfigError, match="--resume is not supported under DeepSpeed ZeRO-3"):
        train(TrainConfig(model="tiny-llama", dataset=causal_dataset, out=run, resume=True, **settings))
