"""Bad inputs: one clear line, a non-zero exit, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codetune.errors import CodetuneError
from codetune.train.config import TrainConfig
from codetune.train.recipe import train


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "codetune", *args], capture_output=True, text=True, timeout=300
    )


def test_seq2seq_data_on_a_causal_model_is_refused(seq2seq_dataset: Path, tmp_path: Path) -> None:
    done = cli(
        "train", "--model", "tiny-llama", "--dataset", str(seq2seq_dataset), "--out", str(tmp_path / "run")
    )
    assert done.returncode == 2
    assert "seq2seq" in done.stderr and "causal" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_causal_data_on_an_encoder_decoder_is_refused(causal_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(CodetuneError, match="encoder-decoder"):
        train(TrainConfig(model="tiny-t5", dataset=causal_dataset, out=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_unknown_method(causal_dataset: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from codetune.cli import main

    args = ["codetune", "train", "-m", "tiny-llama", "-d", str(causal_dataset), "--method", "dora", "-o"]
    monkeypatch.setattr(sys, "argv", [*args, str(tmp_path / "r")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown method 'dora'" in err and "lora, adalora" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_qlora_without_cuda(causal_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(CodetuneError, match="qlora needs a CUDA GPU"):
        train(TrainConfig(model="tiny-llama", dataset=causal_dataset, method="qlora", out=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(CodetuneError, match="dataset folder not found"):
        train(TrainConfig(model="tiny-llama", dataset=tmp_path / "nope", out=tmp_path / "run"))


def test_out_dir_holding_another_run_or_other_files(causal_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = {"dataset": causal_dataset, "out": run, "max_steps": 2, "batch_tokens": 128, "eval_every": 2}
    first = train(TrainConfig(model="tiny-llama", **common))
    assert not first.skipped
    again = train(TrainConfig(model="tiny-llama", **common))
    assert again.skipped  # same config, finished: nothing to do
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(CodetuneError, match="holds another run"):
        train(TrainConfig(model="tiny-gpt-bigcode", **common))
    assert sorted(p.name for p in run.iterdir()) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(CodetuneError, match="holds no codetune run"):
        train(TrainConfig(model="tiny-llama", **{**common, "out": other}))
    single = tmp_path / "notes.txt"
    single.write_text("mine")
    with pytest.raises(CodetuneError, match="is a file, not a folder"):
        train(TrainConfig(model="tiny-llama", **{**common, "out": single}))
    assert single.read_text() == "mine"


@pytest.mark.skipif(__import__("importlib").util.find_spec("wandb") is not None, reason="wandb is installed")
def test_report_to_a_missing_tracker(causal_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(CodetuneError, match="report_to wandb: the package is not installed"):
        train(
            TrainConfig(model="tiny-llama", dataset=causal_dataset, out=tmp_path / "r", report_to=["wandb"])
        )
    assert not (tmp_path / "r").exists()


def test_target_modules_must_exist(causal_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(CodetuneError, match="not linear layers"):
        train(
            TrainConfig(
                model="tiny-llama", dataset=causal_dataset, out=tmp_path / "r", target_modules=["c_attn"]
            )
        )
