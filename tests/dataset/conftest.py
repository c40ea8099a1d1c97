"""Dataset fixtures: a small corpus of Python, Elm and Kotlin files (helpers in tests/helpers/dataset.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers.dataset import corpus_rows, write_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 files (Python, Elm, Kotlin) in 4 repositories."""
    return write_corpus(tmp_path_factory.mktemp("corpus"), corpus_rows())
