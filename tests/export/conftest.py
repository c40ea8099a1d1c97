"""Shared by the export tests: presets made f16-exact and exported once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers.export import READ_BACK, f16_exact

from codetune.export.config import ExportConfig
from codetune.export.runner import export


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """family -> (source folder, GGUF file, export summary), made on first use."""
    made: dict[str, tuple[Path, Path, dict]] = {}

    def get(family: str) -> tuple[Path, Path, dict]:
        if family not in made:
            root = tmp_path_factory.mktemp(family)
            source = f16_exact(READ_BACK[family], root / "model")
            result = export(ExportConfig(model=str(source), out=root / "model.gguf"))
            made[family] = (source, result.out, result.summary)
        return made[family]

    return get
