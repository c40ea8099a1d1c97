"""Each format's examples look as described: windows, units, instruct (JSONL, doccano, docstrings),
seq2seq (CoNaLa) and code_json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.dataset import all_rows, run_build

from codetune.modeling.loading import load_tokenizer

NO_DEDUP = {"minhash": False}


def test_windows_prompt_completion_pairs(corpus: Path, tmp_path: Path) -> None:
    _, dataset, stats = run_build(
        corpus,
        tmp_path / "ds",
        format="windows",
        fim_rate=0.0,
        decontam=NO_DEDUP,
        windows={"prompt_tokens": 40, "completion_tokens": 15},
    )
    tokenizer = load_tokenizer("tiny-gpt-bigcode")
    rows = all_rows(dataset)
    assert len(rows) > 30
    line_start = mid_line = 0
    for _, row in rows:
        assert row["text"] == row["prompt"] + row["completion"]
        n_prompt = len(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
        assert n_prompt <= 40 + 2
        assert len(row["input_ids"]) - n_prompt - 1 <= 15 + 2
        # the loss counts the completion and EOS only
        assert row["loss_mask"] == [0] * n_prompt + [1] * (len(row["input_ids"]) - n_prompt)
        if row["prompt"].endswith("\n"):
            line_start += 1
        else:
            mid_line += 1
    assert line_start > 0 and mid_line > 0
    assert stats["kind"] == "causal" and stats["format"] == "windows"


def test_windows_cover_each_file_in_order(corpus: Path, tmp_path: Path) -> None:
    _, dataset, _ = run_build(corpus, tmp_path / "ds", format="windows", fim_rate=0.0, decontam=NO_DEDUP)
    import pyarrow.parquet as pq

    contents = {r["path"]: r["content"] for r in pq.read_table(corpus / "data-00000.parquet").to_pylist()}
    for split in dataset:
        by_path: dict[str, list[dict]] = {}
        for row in dataset[split]:
            by_path.setdefault(row["path"], []).append(row)
        for path, rows in by_path.items():
            # completions tile the file after the first prompt: nothing skipped, nothing repeated
            joined = rows[0]["prompt"] + "".join(r["completion"] for r in rows)
            assert contents[path].startswith(joined) and not contents[path][len(joined) :].strip()


def test_units_elm_without_comments_and_imports(corpus: Path, tmp_path: Path) -> None:
    _, dataset, _ = run_build(
        corpus,
        tmp_path / "ds",
        format="units",
        fim_rate=0.0,
        decontam=NO_DEDUP,
        units={"drop_comments": True, "drop_imports": True},
    )
    elm = [row["text"] for _, row in all_rows(dataset) if row["path"].endswith(".elm")]
    assert elm
    assert not any("import " in text or "module " in text for text in elm)
    assert not any("-- one step" in text for text in elm)  # inner comments dropped
    update = [t for t in elm if "update msg model =" in t]
    assert update and all(
        t.startswith("{-| Apply a message to the model. -}\nupdate : Msg -> Model -> Model\n") for t in update
    )
    assert any(t.startswith("type Msg") for t in elm)
    assert any("type alias Model" in t for t in elm)


def test_units_kotlin_and_python_with_doc(corpus: Path, tmp_path: Path) -> None:
    _, dataset, _ = run_build(corpus, tmp_path / "ds", format="units", fim_rate=0.0, decontam=NO_DEDUP)
    texts = [row["text"] for _, row in all_rows(dataset)]
    kotlin = [t for t in texts if "fun " in t or "class Circle" in t]
    assert any(t.startswith("// Distance between two points.\nfun distance(") for t in kotlin)
    assert any(t.startswith("/** A circle of radius [r]. */\nclass Circle") for t in kotlin)
    assert not any(t.startswith("override fun area") for t in kotlin)  # inside its class's unit only
    python = [t for t in texts if t.startswith(("def ", "class "))]
    assert not any(t.startswith("def norm(self) -> float:") for t in python)
    assert any("# pi r squared" in t for t in python)  # comments kept unless asked
    _, nested, _ = run_build(
        corpus, tmp_path / "nested", format="units", fim_rate=0.0, decontam=NO_DEDUP, units={"nested": True}
    )
    texts = [row["text"] for _, row in all_rows(nested)]
    assert any(t.startswith("override fun area") for t in texts)  # a method inside a class
    assert any(t.startswith("def norm(self) -> float:") for t in texts)


def test_units_prompt_mode_splits_header_from_body(corpus: Path, tmp_path: Path) -> None:
    _, dataset, _ = run_build(
        corpus, tmp_path / "ds", format="units", fim_rate=0.0, decontam=NO_DEDUP, units={"mode": "prompt"}
    )
    rows = [row for _, row in all_rows(dataset)]
    assert all(row["text"] == row["prompt"] + row["completion"] for row in rows)
    area = next(r for r in rows if "def area" in r["prompt"])
    assert area["prompt"].endswith('"""Area of a circle of the given radius."""')  # docstring with signature
    assert area["completion"].strip().startswith("# pi r squared")
    kotlin = next(r for r in rows if "fun distance(" in r["prompt"])
    assert kotlin["prompt"].startswith("// Distance between two points.\n")
    assert kotlin["completion"].startswith(" {\n    val dx")
    elm = next(r for r in rows if r["prompt"].endswith("update msg model ="))
    assert elm["prompt"].startswith("{-| Apply a message")
    assert elm["completion"].startswith("\n    -- one step at a time\n    case msg of")


def test_instruct_from_docstrings_uses_plain_template(corpus: Path, tmp_path: Path) -> None:
    _, dataset, _ = run_build(corpus, tmp_path / "ds", format="instruct", decontam=NO_DEDUP)
    rows = [row for _, row in all_rows(dataset)]
    pairs = {row["prompt"]: row["completion"] for row in rows}
    key = next(p for p in pairs if "Sum of values, skipping negatives." in p)
    assert key == "### Instruction:\nSum of values, skipping negatives.\n\n### Response:\n"
    assert pairs[key].startswith("def total") and '"""' not in pairs[key]
    assert any("Apply a message to the model." in p for p in pairs)  # Elm doc comment
    assert any(c.startswith("fun distance(") for c in pairs.values())  # Kotlin line comment
    for row in rows:
        n = row["loss_mask"].count(0)
        assert row["input_ids"][:n] == load_tokenizer("tiny-gpt-bigcode")(row["prompt"])["input_ids"][:n]


def test_instruct_jsonl_with_field_names(tmp_path: Path) -> None:
    records = [{"q": f"Add {i} to x", "a": f"x + {i}", "ctx": "x is an int"} for i in range(12)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    _, dataset, _ = run_build(
        tmp_path / "pairs.jsonl",
        tmp_path / "ds",
        format="instruct",
        instruct={"instruction_field": "q", "response_field": "a", "input_field": "ctx"},
    )
    rows = [row for _, row in all_rows(dataset)]
    assert len(rows) == 12
    row = next(r for r in rows if r["completion"] == "x + 3")
    assert row["prompt"] == "### Instruction:\nAdd 3 to x\n\nx is an int\n\n### Response:\n"


def test_instruct_uses_the_chat_template_when_there_is_one(tmp_path: Path) -> None:
    from tests.helpers.dataset import make_tokenizer

    folder = make_tokenizer(tmp_path / "tok")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}<user>{{ m['content'] }}</user>{% endfor %}<bot>"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "p.jsonl").write_text(json.dumps({"instruction": "Say hi", "output": "hi"}))
    _, dataset, _ = run_build(tmp_path / "p.jsonl", tmp_path / "ds", format="instruct", model=str(folder))
    row = next(row for _, row in all_rows(dataset))
    assert row["prompt"] == "<user>Say hi</user><bot>"


def test_doccano_export_is_converted(tmp_path: Path) -> None:
    records = [
        {
            "id": 1,
            "label": [],
            "Comments": [],
            "text": "/*本示例判断如果条件格式的类型为xlAboveAverageCondition，则删除该条件格式。*/\nfunction test() {\n"
            '// 从工作表上区域 B1:B10 中选择第二个条件格式\n    let c = ActiveSheet.Range("B1:B10").FormatConditions.Item(2)\n'
            "    c.Delete()\n}",
        },
        {
            "id": 2,
            "text": "Delete the second rule\nfunction t2() { Rules.Item(2).Delete() }",
            "label": [[0, 22, "instruction"]],
            "Comments": [{"text": "Uses the Rules API"}],
        },
        {"id": 3, "text": "Write a loop over rows", "label": ["for (let r of rows) { r.Clear() }"]},
        {"id": 4, "text": "no instruction in here", "label": []},
    ]
    (tmp_path / "admin.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records))
    _, dataset, _stats = run_build(tmp_path / "admin.jsonl", tmp_path / "ds", format="instruct")
    pairs = {row["path"]: row for _, row in all_rows(dataset)}
    assert set(pairs) == {"admin.jsonl:1", "admin.jsonl:2", "admin.jsonl:3"}
    first = pairs["admin.jsonl:1"]
    assert "本示例判断如果条件格式的类型为xlAboveAverageCondition，则删除该条件格式。" in first["prompt"]
    assert first["completion"].startswith("function test() {\n// 从工作表上区域")
    assert pairs["admin.jsonl:2"]["prompt"] == (
        "### Instruction:\nDelete the second rule\nUses the Rules API\n\n### Response:\n"
    )
    assert pairs["admin.jsonl:2"]["completion"] == "function t2() { Rules.Item(2).Delete() }"
    assert pairs["admin.jsonl:3"]["completion"] == "for (let r of rows) { r.Clear() }"


def test_seq2seq_conala(tmp_path: Path) -> None:
    records = [
        {
            "question_id": i,
            "intent": f"How to sort list {i}?",
            "snippet": f"sorted(values_{i})",
            "rewritten_intent": f"sort list `values_{i}` ascending",
        }
        for i in range(15)
    ]
    records.append({"question_id": 99, "intent": "mined", "snippet": "x", "rewritten_intent": None})
    (tmp_path / "conala-train.json").write_text(json.dumps(records))
    _, dataset, stats = run_build(
        tmp_path / "conala-train.json", tmp_path / "ds", format="seq2seq", model="tiny-t5"
    )
    tokenizer = load_tokenizer("tiny-t5")
    rows = [row for _, row in all_rows(dataset)]
    assert len(rows) == 15 and stats["dropped"]["no_target"] == 1
    assert stats["kind"] == "seq2seq"
    row = next(r for r in rows if r["target"] == "sort list `values_4` ascending")
    assert row["source"] == "How to sort list 4?\nsorted(values_4)"
    assert set(row) == {"input_ids", "labels", "source", "target", "path", "repo"}
    assert row["input_ids"] == tokenizer(row["source"], add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]
    assert row["labels"] == tokenizer(row["target"], add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]


def test_code_json_records(tmp_path: Path) -> None:
    lines = [json.dumps({"code": f"def f{i}(x):\n    return x * {i}\n"}) for i in range(10)]
    (tmp_path / "train.json").write_text("\n".join(lines))
    _, dataset, stats = run_build(tmp_path / "train.json", tmp_path / "ds", format="code_json", fim_rate=0.0)
    texts = sorted(row["text"] for _, row in all_rows(dataset))
    assert texts == sorted(f"def f{i}(x):\n    return x * {i}\n" for i in range(10))
    assert stats["format"] == "code_json"


@pytest.mark.parametrize("fmt", ["files", "windows", "units", "code_json"])
def test_every_causal_format_ends_rows_with_eos(fmt: str, corpus: Path, tmp_path: Path) -> None:
    _, dataset, _ = run_build(corpus, tmp_path / "ds", format=fmt, decontam=NO_DEDUP)
    eos = load_tokenizer("tiny-gpt-bigcode").eos_token_id
    rows = [row for _, row in all_rows(dataset)]
    assert rows and all(
        row["input_ids"][-1] == eos and len(row["loss_mask"]) == len(row["input_ids"]) for row in rows
    )


def test_mix_adds_instruction_pairs_to_train_and_valid_only(corpus: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"instruction": f"Add {i}", "output": f"x = x + {i}\n"}) + "\n" for i in range(20))
    )
    _, dataset, stats = run_build(
        corpus,
        tmp_path / "ds",
        fim_rate=0.0,
        mix=[{"format": "instruct", "corpus": str(pairs)}],
        decontam=NO_DEDUP,
    )
    (mixed,) = stats["mix"]
    assert sum(mixed["examples"].values()) == 20
    instruct_rows = {split: [r for r in dataset[split] if 0 in r["loss_mask"]] for split in dataset}
    assert len(instruct_rows["train"]) == mixed["examples"]["train"] > 0
    assert len(instruct_rows["valid"]) == mixed["examples"]["valid"] + mixed["examples"]["test"]
    assert instruct_rows["test"] == []
    assert stats["splits"]["train"]["examples"] == len(dataset["train"])
