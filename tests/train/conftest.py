"""Fixtures of the train tests: tiny datasets shared by the session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.helpers.train import make_dataset


def pytest_collection_modifyitems(items) -> None:
    """peft warns about AdaLoRA's pruned (zero-rank) modules on every save and load: expected here."""
    for item in items:
        if "tests/train/" in str(item.fspath):
            item.add_marker(pytest.mark.filterwarnings("ignore::UserWarning:peft"))


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)  # the machine's 2 cores are shared: 1 thread is faster


@pytest.fixture(scope="session")
def datasets_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="session")
def causal_dataset(datasets_dir) -> Path:
    """Made with tiny-llama's tokenizer, the model most tests train (train refuses another's)."""
    return make_dataset(datasets_dir / "causal", "tiny-llama")


@pytest.fixture(scope="session")
def dataset_of(datasets_dir):
    """The causal dataset made with a preset's own tokenizer (presets of different families differ)."""
    made: dict[str, Path] = {}

    def get(preset: str) -> Path:
        if preset not in made:
            made[preset] = make_dataset(datasets_dir / f"causal-{preset}", preset)
        return made[preset]

    return get


@pytest.fixture(scope="session")
def seq2seq_dataset(datasets_dir) -> Path:
    return make_dataset(datasets_dir / "seq2seq", "tiny-t5", kind="seq2seq")
