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
