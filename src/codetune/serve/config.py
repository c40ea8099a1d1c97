"""Configuration of the completion server."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from codetune.config import StrictModel


class ServeConfig(StrictModel):
    """Serve a model over an OpenAI-compatible HTTP API."""

    model: str = "tiny-gpt-bigcode"
    adapter: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = None
