"""The report folder `codetune eval` writes: report.json (every number), report.md, predictions.jsonl,
PNG plots and a manifest.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from codetune.artifacts.manifest import check_output_folder, write_manifest
from codetune.artifacts.paths import PREDICTIONS, REPORT_JSON, REPORT_MD
from codetune.errors import InputError
from codetune.files import atomic_dir, atomic_write_text, read_json_object, write_json

# Keys every report.json has.
REQUIRED = ("models", "settings")


def write_report(
    out: str | Path,
    report: dict[str, Any],
    *,
    markdown: Callable[[dict[str, Any], list[str]], str],
    plots: Callable[[Path], list[str]],
    manifest: dict[str, Any],
) -> Path:
    """Write the report folder atomically.

    ``report["predictions"]`` (one dict per item) goes to predictions.jsonl, not report.json;
    ``plots(folder)`` draws into the folder and names the files it drew; ``markdown(report,
    plots)`` renders report.md from what report.json holds.
    """
    with atomic_dir(out, check=partial(check_output_folder, stage="eval")) as tmp:
        drawn = plots(tmp)
        predictions = report.get("predictions") or []
        report = {k: v for k, v in report.items() if k != "predictions"} | {"plots": drawn}
        if predictions:
            lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
            atomic_write_text(tmp / PREDICTIONS, lines)
            report["predictions_file"] = PREDICTIONS
        write_json(tmp / REPORT_JSON, report)
        atomic_write_text(tmp / REPORT_MD, markdown(report, drawn))
        write_manifest(tmp, manifest)
    return Path(out)


def read_report(folder: str | Path) -> dict[str, Any]:
    """report.json of a report folder, with its predictions (from predictions.jsonl) under ``predictions``."""
    folder = Path(folder)
    path = folder / REPORT_JSON
    if not path.is_file():
        raise InputError(f"{folder} is not a report folder from `codetune eval` (no {REPORT_JSON})")
    report = read_json_object(path)
    if any(key not in report for key in REQUIRED):
        raise InputError(f"{path} is not a codetune report (needs {', '.join(REQUIRED)})")
    predictions: list[dict[str, Any]] = []
    if name := report.get("predictions_file"):
        file = folder / str(name)
        if not file.is_file():
            raise InputError(f"report {folder} names {name} but the file is missing")
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                predictions.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise InputError(f"{file}:{number} is not valid JSON: {error.msg}") from None
    return report | {"predictions": predictions}
