"""The quickstart's whole path, shrunk: pretrain (cached) -> collect -> build -> LoRA -> eval report."""

from __future__ import annotations

import json

from tests.test_runner import make_project

from codetune.quickstart import QuickstartSettings, quickstart


def test_quickstart_path_writes_a_base_vs_tuned_report_and_reuses_the_base(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    general = make_project(tmp_path / "general", files=16)
    project = make_project(tmp_path / "project", files=12)
    settings = QuickstartSettings(
        pretrain_steps=2, adapt_steps=2, samples=4, max_length=64, pretrain_source=general
    )

    results = quickstart(source=project, out=tmp_path / "out", settings=settings)
    assert [r.stage for r in results] == ["collect", "build", "train", "collect", "build", "train", "eval"]
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    assert set(report["models"]) == {"base", "tuned"}
    assert all("edit_sim" in scores for scores in report["models"].values())
    assert "codetune serve --model" in capsys.readouterr().err

    again = quickstart(source=project, out=tmp_path / "out2", settings=settings)
    assert [r.stage for r in again] == ["collect", "build", "train", "eval"]  # the pretrained base is reused
