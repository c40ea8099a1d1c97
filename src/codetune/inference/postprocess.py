"""Compatibility names: post-processing lives in ``codetune.generation.postprocess``."""

from codetune.generation.postprocess import FimPostprocessor, fim_postprocessor

__all__ = ["FimPostprocessor", "fim_postprocessor"]
