"""The recipe tests: every example recipe end to end on tiny presets and small local fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _two_threads() -> None:
    import torch
    from tests.helpers.threads import threads_per_worker

    torch.set_num_threads(threads_per_worker())


@pytest.fixture(params=["cpu", pytest.param("own", marks=pytest.mark.slow)])
def settings(request, monkeypatch) -> str:
    """Each recipe test runs with the CPU caps (default suite) and with the recipe's own settings (slow).

    A recipe's own run trains for up to 3,000 steps: there torch's threads follow the free cores, as
    codetune chooses them by default (codetune.threads), so that a run left alone on its worker
    takes both cores and one beside a busy worker takes one."""
    if request.param == "own":
        monkeypatch.setenv("CODETUNE_THREADS", "auto")
    return request.param
