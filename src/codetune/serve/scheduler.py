"""Compatibility name: continuous batching lives in ``codetune.generation.engines.continuous``."""

from codetune.generation.engines.continuous import ContinuousEngine as ContinuousBatcher

__all__ = ["ContinuousBatcher"]
