"""`codetune collect --executor ray` on a Ray head this module starts writes the corpus the local
executor writes: same files, same contents, same drop counts; near-dedup spread over the cluster gives
the local answer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from codetune.artifacts import read_corpus

pytest.importorskip("ray.data")

FIXTURE = Path(__file__).parent / "fixtures" / "tree"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray") / "tree"
    shutil.copytree(FIXTURE, root, symlinks=True)
    base = (root / "kotlin" / "Repo.kt").read_text()
    for i in range(3):  # a near-duplicate cluster of several members, one with a distinct twin
        (root / "kotlin" / f"Variant{i}.kt").write_text(base.replace("class", f"class /* v{i} */", 1))
    return root


def _corpus(folder: Path) -> tuple[list[tuple], dict]:
    rows = sorted(tuple(sorted(row.items())) for row in read_corpus(folder))
    manifest = json.loads((folder / "manifest.json").read_text())
    return rows, {key: manifest[key] for key in ("counts", "totals", "redactions", "shards", "fingerprint")}


@pytest.mark.parametrize("language", ["kotlin", "javascript"])
def test_ray_writes_the_local_corpus(tree, tmp_path, cli, ray_head, language):
    local, remote = tmp_path / "local", tmp_path / "ray"
    args = ("collect", str(tree), "--language", language, "--set", "chunk_size=2", "--set", "shard_rows=2")
    proc = cli(*args, "--out", str(local))
    assert proc.returncode == 0, proc.stderr
    proc = cli(*args, "--out", str(remote), "--executor", "ray", "--address", ray_head)
    assert proc.returncode == 0, proc.stderr
    local_rows, local_manifest = _corpus(local)
    ray_rows, ray_manifest = _corpus(remote)
    assert ray_rows == local_rows
    assert ray_manifest == local_manifest
    if language == "kotlin":  # the fixture's drops, near duplicates included, really happened
        dropped = local_manifest["counts"]["dropped"]
        assert dropped["near_duplicate"]["files"] >= 3 and dropped["exact_duplicate"]["files"] == 1


@pytest.mark.parametrize("rows_per_task", [20_000, 7])
def test_ray_near_duplicates_match_the_local_lsh(ray_head, rows_per_task):
    """Clusters found from band buckets on the cluster give near_duplicates' own answer, in order,
    with one map and one reduce task and with a block per CPU shuffled over a reducer per CPU."""
    import random

    import ray

    from codetune.collect.dedup import minhash_values, near_duplicates
    from codetune.collect.executor import ray_near_duplicates

    rng = random.Random(3)
    words = [f"name{i}" for i in range(60)]
    texts = []
    for _ in range(40):
        if texts and rng.random() < 0.5:  # an edited copy of an earlier text
            tokens = rng.choice(texts).split()
            for _ in range(rng.randint(0, 8)):
                tokens[rng.randrange(len(tokens))] = rng.choice(words)
            texts.append(" ".join(tokens))
        else:
            texts.append(" ".join(rng.choice(words) for _ in range(80)))
    items = [(i, minhash_values(text, 128, 3).tobytes()) for i, text in enumerate(texts)]
    expected = near_duplicates(items, 0.6, 128, text_of=texts.__getitem__, ngram=3)
    assert len(expected) >= 5  # the input has near duplicates to find
    ray.init(address=ray_head, include_dashboard=False, log_to_driver=False)
    try:
        assert ray_near_duplicates(items, 0.6, 128, texts, 3, rows_per_task=rows_per_task) == expected
    finally:
        ray.shutdown()


def test_ray_collect_resumes_from_finished_sources(tree, tmp_path, ray_head, monkeypatch, caplog):
    """A run killed in its second source leaves the first one finished; the rerun reads it back."""
    import logging

    import ray

    from codetune.collect import pipeline
    from codetune.collect.config import CollectConfig

    first, second = tmp_path / "one", tmp_path / "two"
    shutil.copytree(tree / "kotlin", first)
    shutil.copytree(tree / "kotlin", second)  # a copy: all its files are duplicates of the first
    real = pipeline._process_chunk

    def killed_in_second(chunk):  # runs on a Ray worker, pickled by value: reach the module there
        from codetune.collect import pipeline as module

        if chunk[0][2] == str(second):
            raise RuntimeError("worker killed")
        return [module.process_file(path, rel, repo, module._WORKER_CTX) for path, rel, repo in chunk]

    config = CollectConfig(
        sources=[str(first), str(second)], language="kotlin", out=tmp_path / "corpus", executor="ray"
    )
    ray.init(address=ray_head, include_dashboard=False, log_to_driver=False)
    try:
        monkeypatch.setattr(pipeline, "_process_chunk", killed_in_second)
        with pytest.raises(Exception, match="worker killed"):
            pipeline.collect(config)
        assert not (tmp_path / "corpus").exists()  # no half corpus
        monkeypatch.setattr(pipeline, "_process_chunk", real)
        with caplog.at_level(logging.INFO, logger="codetune.collect.pipeline"):
            result = pipeline.collect(config)
    finally:
        ray.shutdown()
    assert any(f"resuming: {first} already processed" in m for m in caplog.messages)
    assert not any(str(second) in m for m in caplog.messages if m.startswith("resuming"))
    assert result.summary["files kept"] == 3
    assert not (tmp_path / ".corpus.work").exists()
