"""A real uvicorn server on 127.0.0.1 (free port, in a thread) per test module, over a tiny preset."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def make_run(folder: Path, seed: int = 0, model: str = "tiny-gpt-bigcode") -> Path:
    """A run folder as `codetune train` writes it: adapter/ (peft LoRA) + manifest.json.

    B is random (not peft's zero init), drawn from ``seed``, so that each adapter changes the outputs
    in its own way.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from codetune.modeling.loading import load_model

    torch.manual_seed(seed)
    lora = LoraConfig(r=8, lora_alpha=64, target_modules=["c_attn"], init_lora_weights=False)
    get_peft_model(load_model(model), lora).save_pretrained(str(folder / "adapter"))
    (folder / "manifest.json").write_text(json.dumps({"model": model, "method": "lora"}))
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    def __init__(self, url: str, server: Any, thread: threading.Thread, app: Any) -> None:
        self.url, self.server, self.thread, self.app = url, server, thread, app

    @property
    def service(self) -> Any:
        return self.app.state.service


def start_server(**options: Any) -> RunningServer:
    import torch
    import uvicorn

    from codetune.serve.app import create_app
    from codetune.serve.config import ServeConfig

    torch.set_num_threads(2)
    cfg = ServeConfig(port=free_port(), device="cpu", log_level="warning", **options)
    app = create_app(cfg)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    return RunningServer(f"http://{cfg.host}:{cfg.port}", server, thread, app)


def stop_server(running: RunningServer) -> None:
    running.server.should_exit = True
    running.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = start_server()
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def launch():
    """start_server(**ServeConfig options) and stop_server, for modules that need their own server."""
    return start_server, stop_server
