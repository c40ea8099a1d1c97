"""Compatibility names: the Python API lives in ``codetune.generation.api``."""

from codetune.generation.api import CodeGenerationPipeline, CodeModel, pipeline
from codetune.generation.params import sampling_params

__all__ = ["CodeGenerationPipeline", "CodeModel", "pipeline", "sampling_params"]
