"""A real uvicorn server on 127.0.0.1 (a free port, in a thread) over a tiny preset, and run folders
to serve."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from tests.helpers.cli import free_port
from tests.helpers.threads import threads_per_worker


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


class RunningServer:
    def __init__(self, url: str, server: Any, thread: threading.Thread, app: Any) -> None:
        self.url, self.server, self.thread, self.app = url, server, thread, app

    @property
    def service(self) -> Any:
        return self.app.state.service


def start_server(**options: Any) -> RunningServer:
    import torch
    import uvicorn

    from codetune.serve.app import create_app, server_config
    from codetune.serve.config import ServeConfig

    torch.set_num_threads(threads_per_worker())
    cfg = ServeConfig(port=free_port(), device="cpu", log_level="warning", **options)
    app = create_app(cfg)
    server = uvicorn.Server(server_config(cfg, app))  # the settings `codetune serve` runs with
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
