"""`codetune generate --executor ray` on a Ray head the tests start writes what the local path writes:
the same rows, ids and completions, and resumes from the ids already in the output."""

from __future__ import annotations

import json
import re

import pytest
from tests.helpers.cli import assert_error_line

pytest.importorskip("ray.data")


def _prompts(path, count: int) -> None:
    rows = [
        {"id": f"r{i}", "prompt": f"def f{i}(x):\n" + "    x += 1\n" * (i % 3) + "    return"}
        for i in range(count)
    ]
    rows.append({"id": "fim", "prompt": "def g(y):\n    return ", "suffix": "\n\nprint(g(2))\n"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _by_id(path) -> dict:
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


def test_ray_generate_matches_local_and_resumes(tmp_path, cli, ray_head):
    prompts = tmp_path / "in.jsonl"
    _prompts(prompts, 4)
    args = ("generate", "--model", "tiny-gpt-bigcode", "--input", str(prompts), "--max-new-tokens", "4",
            "--set", "device=cpu", "--set", "batch_size=1")  # fmt: skip
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    proc = cli(*args, "--out", str(local))
    assert proc.returncode == 0, proc.stderr
    expected = _by_id(local)
    # the untrained tiny model may end a FIM middle at once; the plain rows really generate
    assert len(expected) == 5 and all(row["new_tokens"] > 0 for key, row in expected.items() if key != "fim")
    # A killed earlier run: two whole result rows and a partial third line.
    lines = local.read_text().splitlines(keepends=True)
    remote.write_text(lines[0] + lines[1] + lines[2][:10])
    proc = cli(*args, "--out", str(remote), "--executor", "ray", "--address", ray_head, "--engines", "2")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"skipped \(already done\)\W+2\b", proc.stderr), proc.stderr
    assert re.search(r"generated\W+3\b", proc.stderr), proc.stderr
    assert _by_id(remote) == expected
    assert len(remote.read_text().splitlines()) == 5  # nothing redone, nothing lost


def test_ray_generate_refuses_vllm_without_gpus(tmp_path, cli, ray_head):
    prompts = tmp_path / "in.jsonl"
    _prompts(prompts, 1)
    proc = cli("generate", "--model", "tiny-gpt-bigcode", "--input", str(prompts), "--out", str(tmp_path / "o.jsonl"),
               "--engine", "vllm", "--executor", "ray", "--address", ray_head)  # fmt: skip
    assert_error_line(proc, "needs GPUs", "has none")
    assert not (tmp_path / "o.jsonl").exists()
