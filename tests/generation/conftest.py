"""Tiny models shared by the generation tests (loaded once per session)."""

from __future__ import annotations

import pytest
from tests.helpers.threads import threads_per_worker


@pytest.fixture(scope="session")
def tiny():
    import torch

    from codetune.modeling.loading import load_model, load_tokenizer

    torch.set_num_threads(threads_per_worker())
    return load_model("tiny-gpt-bigcode"), load_tokenizer("tiny-gpt-bigcode")


@pytest.fixture(scope="session")
def tiny_t5():
    from codetune.modeling.loading import load_model, load_tokenizer

    return load_model("tiny-t5"), load_tokenizer("tiny-t5")
