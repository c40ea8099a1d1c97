"""The recipe tests: every example recipe end to end on tiny presets and small local fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _two_threads() -> None:
    import torch
    from tests.helpers.threads import threads_per_worker

    torch.set_num_threads(threads_per_worker())


@pytest.fixture(params=["cpu", pytest.param("own", marks=pytest.mark.slow)])
def settings(request) -> str:
    """Each recipe test runs with the CPU caps (default suite) and with the recipe's own settings (slow)."""
    return request.param
