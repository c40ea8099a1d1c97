"""A real uvicorn server on 127.0.0.1 (free port, in a thread) per test module, over a tiny preset."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.helpers.server import RunningServer, start_server, stop_server


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = start_server()
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def launch():
    """start_server(**ServeConfig options) and stop_server, for modules that need their own server."""
    return start_server, stop_server


@pytest.fixture
def hub_client_online(monkeypatch):
    """huggingface_hub's clients as they behave without HF_HUB_OFFLINE, whatever the caller has set.

    huggingface_hub 2.x refuses every URL in offline mode, a server on 127.0.0.1 too; these tests only
    ever talk to the local server, so the caller's offline setting must not decide whether they pass.
    """
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
