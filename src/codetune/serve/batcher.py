"""Compatibility names: micro-batching is the static engine (``codetune.generation.engines.hf``)."""

from codetune.generation.engines.base import QueueFull
from codetune.generation.engines.hf import StaticEngine as Batcher

__all__ = ["Batcher", "QueueFull"]
