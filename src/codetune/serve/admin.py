"""The server's admin routes, behind the API key (and, without one, for clients on this machine only).

- ``POST /admin/adapters`` ``{"name", "path"}``: serve the LoRA run at ``path`` as ``name`` without a
  restart. ``name`` may be a new model name, an adapter's, or the base's served name (what requests
  naming no model get: Tabby's and llama.cpp's). Requests already running finish on the weights they
  started with (``codetune.serve.adapters``).
- ``GET /admin/adapters``: each served name and the adapter folder it runs (null: the base alone).
- ``GET /admin/records``: what the recorder kept and withheld since start-up, and the confidence
  gate with what it removed from the records it was fitted on.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import Field

from codetune.serve.protocols.base import Mount, ProtocolModel
from codetune.serve.responses import ServingError

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class AdapterSwap(ProtocolModel):
    name: str = Field(..., max_length=64, description="The served model name to (re)point.")
    path: str = Field(..., max_length=4096, description="A run folder or a LoRA adapter folder.")


def _local_only(ctx: Mount, request: Request) -> None:
    """Without an API key, the admin routes answer this machine's clients only."""
    host = request.client.host if request.client is not None else None
    if not ctx.guard.cfg.api_key and host not in LOOPBACK:
        raise ServingError(
            403,
            "admin routes need an API key (CODETUNE_API_KEY) when called from another machine",
            type="permission_error",
            code="admin_needs_key",
        )


def mount(ctx: Mount) -> None:
    service = ctx.service

    @ctx.post("/admin/adapters", AdapterSwap, errors=(403,))
    async def swap(request: Request, body: AdapterSwap) -> Any:
        _local_only(ctx, request)
        done = await service.swap_adapter(body.name, body.path)
        return {
            "name": done.name,
            "path": done.folder,
            "adapter": done.adapter,
            "replaced": done.replaced,
            "models": service.model_names(),
        }

    @ctx.get("/admin/adapters")
    async def adapters(request: Request) -> Any:
        _local_only(ctx, request)
        return {"models": {name: service.table.folders.get(name) for name in service.model_names()}}

    @ctx.get("/admin/records")
    async def records(request: Request) -> Any:
        _local_only(ctx, request)
        return service.recorder.stats()
