"""A source folder of small Python modules, as a project `codetune run` and quickstart start from."""

from __future__ import annotations

import textwrap
from pathlib import Path


def make_project(root: Path, files: int = 14) -> Path:
    src = root / "src"
    src.mkdir(parents=True)
    for i in range(files):
        (src / f"module_{i}.py").write_text(
            textwrap.dedent(
                f'''\
                """Module {i}: small helpers."""


                def scale_{i}(values, factor={i + 1}):
                    result = []
                    for value in values:
                        result.append(value * factor + {i})
                    return result


                class Counter{i}:
                    def __init__(self):
                        self.count = {i}

                    def bump(self, step=1):
                        self.count += step
                        return self.count
                '''
            )
        )
    return src
