"""Source trees for collect tests: files written as given, and modules distinct enough to survive dedup."""

from __future__ import annotations

from pathlib import Path


def write(root: Path, rel: str, text: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def distinct_module(i: int) -> str:
    """A small Python module whose identifiers differ per ``i`` (no near-duplicates among them)."""
    names = [f"alpha{i}", f"beta{i}_{i * 7}", f"gamma_{i}x", f"delta{i}y{i}"]
    body = "\n".join(
        f"def {name}_{j}(value_{i}_{j}, other{j}_{i}):\n    return value_{i}_{j} * {j} + other{j}_{i} - {i}\n"
        for j, name in enumerate(names)
    )
    return f"import math{i % 3}\n\n{body}"
