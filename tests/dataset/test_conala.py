"""CoNaLa as it ships: the intent-rewriting recipe generates over the real mined file, whose rows
share question_ids (several answers' snippets per question) and are keyed by ``id``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codetune.config import load_recipe
from codetune.errors import InputError
from codetune.generation.batch import generate_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def mined_rows() -> list[dict]:
    """conala-mined.jsonl's fields (https://huggingface.co/datasets/neulab/conala, config "mined"):
    question_id, parent_answer_post_id, prob, snippet, intent, id."""
    rows = []
    for question in range(3):
        for answer in range(2):
            rows.append(
                {
                    "question_id": 34705205 + question,
                    "parent_answer_post_id": 34704745 + 10 * question + answer,
                    "prob": 0.87 - 0.1 * answer,
                    "snippet": f"sorted(l{question}, key=lambda x: x[{answer}])",
                    "intent": f"Sort a nested list {question} by element {answer}",
                    "id": f"{34705205 + question}_{34704745 + 10 * question + answer}_0",
                }
            )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def recipe_generate(tmp_path: Path, mined: Path):
    recipe = load_recipe(
        EXAMPLES / "intent-rewriting.yaml",
        [
            f"generate.input={mined}",
            f"generate.out={tmp_path / 'generations.jsonl'}",
            "generate.model=tiny-t5",
            "generate.max_new_tokens=2",
            "generate.device=cpu",
        ],
    )
    return recipe.generate


def test_the_recipe_generates_over_the_real_mined_file(tmp_path: Path) -> None:
    rows = mined_rows()
    cfg = recipe_generate(tmp_path, write_jsonl(tmp_path / "conala-mined.jsonl", rows))
    generate_file(cfg)
    out = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in out) == sorted(r["id"] for r in rows)  # every row, each once
    assert len({r["question_id"] for r in out}) == 3
    assert all(isinstance(r["rewritten_intent"], str) for r in out)
    # resumable by id: a second run generates nothing new
    assert generate_file(cfg).summary["generated"] == 0


def test_duplicate_ids_are_named(tmp_path: Path) -> None:
    rows = mined_rows()
    rows[4]["id"] = rows[1]["id"]
    cfg = recipe_generate(tmp_path, write_jsonl(tmp_path / "conala-mined.jsonl", rows))
    with pytest.raises(InputError) as error:
        generate_file(cfg)
    assert "conala-mined.jsonl:5" in str(error.value) and repr(rows[1]["id"]) in str(error.value)
    assert "duplicate id" in str(error.value)
