"""`codetune build --repo-context` through the CLI: context from the example's own repository only,
never from a held-out file, within the token budget and max_length, and counted in stats.json."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli
from tests.helpers.dataset import write_corpus

REPOS = ("alpha", "beta", "gamma")
MARK = re.compile(r"MARK_(\w+?)_(\w+?)_END")


def repo_rows() -> list[dict]:
    """Three repositories; each module calls helpers defined in two helper files of its repository.

    Every file carries a unique marker ``MARK_<repo>_<stem>_END``, so where any text of an example
    came from can be read off it."""
    rows = []
    for repo in REPOS:
        files = {}
        for half in ("a", "b"):
            files[f"helpers_{half}.py"] = "".join(
                f"def {repo}_{half}{k}(value):\n    return value * {k + 2}  # MARK_{repo}_helpers_{half}_END\n\n\n"
                for k in range(3)
            )
        for i in range(6):
            files[f"mod{i}.py"] = (
                f"from helpers_a import {repo}_a{i % 3}\nfrom helpers_b import {repo}_b{i % 3}\n\n\n"
                f"# MARK_{repo}_mod{i}_END\ndef compute_{i}(items):\n    total = 0\n    for item in items:\n"
                f"        total += {repo}_a{i % 3}(item) - {repo}_b{i % 3}(item)\n    return total\n"
            )
        for path, content in files.items():
            rows.append(
                {
                    "path": path,
                    "repo": repo,
                    "language": "python",
                    "content": content,
                    "bytes": len(content.encode()),
                    "lines": content.count("\n") + 1,
                    "sha256": hashlib.sha256(content.encode()).hexdigest(),
                }
            )
    return rows


def build(
    tmp_path: Path, model: str, *extra: str, rows: list[dict] | None = None
) -> tuple[dict, dict, object]:
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    corpus = write_corpus(tmp_path / "corpus", rows or repo_rows())
    result = run_cli(
        "build",
        str(corpus),
        "--model",
        model,
        "--out",
        str(tmp_path / "ds"),
        "--split-by",
        "file",
        "--repo-context",
        "--set",
        "valid_fraction=0.2",
        "--set",
        "test_fraction=0.2",
        *extra,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    return (
        stats,
        load_from_disk(str(tmp_path / "ds")),
        AutoTokenizer.from_pretrained(str(tmp_path / "ds" / "tokenizer")),
    )


def marks(text: str) -> set[tuple[str, str]]:
    return set(MARK.findall(text))


def check_sources(data, tokenizer) -> None:
    """Every marker in an example is its own file's or a train file's of its own repository."""
    held_out = {(r["repo"], Path(r["path"]).stem) for split in ("valid", "test") for r in data[split]}
    train = {(r["repo"], Path(r["path"]).stem) for r in data["train"]}
    assert held_out and not held_out & train
    for split in ("train", "valid", "test"):
        own_split = {(r["repo"], Path(r["path"]).stem) for r in data[split]}
        for row in data[split]:
            own = (row["repo"], Path(row["path"]).stem)
            for repo, stem in marks(tokenizer.decode(row["input_ids"])):
                assert repo == row["repo"], f"{split} {own}: context from repository {repo}"
                allowed = train | ({own} if split == "train" else own_split)
                assert (repo, stem) in allowed, f"{split} {own}: context from held-out {repo}/{stem}"


def test_fim_and_file_rows_carry_context_from_their_own_repository_only(tmp_path):
    budget, max_length = 64, 200
    stats, data, tok = build(
        tmp_path,
        "tiny-qwen2.5-coder",
        "--max-length",
        str(max_length),
        "--set",
        f"repo_context_budget={budget}",
    )
    check_sources(data, tok)
    info = stats["repo_context"]
    assert info["enabled"] and info["budget_tokens"] == budget
    repo_name = tok.convert_tokens_to_ids("<|repo_name|>")
    for split in ("train", "valid", "test"):
        rows = data[split]
        # a files row trains on everything but its context: the masked tokens are the context
        masked = [mask.count(0) for mask in rows["loss_mask"]]
        carrying = [n for n in masked if n]
        assert all(len(ids) <= max_length for ids in rows["input_ids"])
        assert all(n <= budget for n in masked), f"{split}: over the budget {budget}: {max(masked)}"
        # Qwen2.5-Coder's layout: the repository token opens every row that has context, right away
        assert [bool(n) for n in masked] == [ids[0] == repo_name for ids in rows["input_ids"]]
        counted = info["splits"][split]
        assert counted["examples"] == len(rows) and counted["examples_with_context"] == len(carrying)
        mean = round(sum(carrying) / len(carrying), 2) if carrying else 0.0
        assert counted["mean_context_tokens"] == pytest.approx(mean)
    train_rows = data["train"]
    assert info["splits"]["train"]["examples_with_context"] >= 3
    # FIM rows got context too, and a training row names the definition its middle may call
    fim_prefix = tok.convert_tokens_to_ids("<|fim_prefix|>")
    with_context = [ids for ids in train_rows["input_ids"] if ids[0] == repo_name]
    assert any(fim_prefix in ids for ids in with_context)
    assert any(fim_prefix not in ids for ids in with_context)
    assert all("<|file_sep|>" in tok.decode(ids) for ids in with_context)
    assert info["examples_with_context"] == sum(
        info["splits"][s]["examples_with_context"] for s in info["splits"]
    )


def test_prompt_rows_get_comment_headers_without_repository_tokens(tmp_path):
    stats, data, tok = build(
        tmp_path,
        "tiny-codellama",
        "--format",
        "windows",
        "--max-length",
        "256",
        "--set",
        "repo_context_budget=96",
    )
    check_sources(data, tok)
    train = data["train"]
    texts = [tok.decode(ids) for ids in train["input_ids"]]
    headed = [t for t in texts if "# Path: " in t]
    assert headed and stats["repo_context"]["splits"]["train"]["examples_with_context"] == len(headed)
    for text, row in zip(texts, train, strict=True):
        if "# Path: " in text:
            # the context comes first, then the target's own header, then its prompt
            assert f"# Path: {row['path']}\n" + row["prompt"][:20] in text
            assert text.index("# Path: ") < text.index(row["prompt"][:20])
    # the completion alone carries the loss, as without context
    for ids, mask, completion in zip(
        train["input_ids"], train["loss_mask"], train["completion"], strict=True
    ):
        assert (
            tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
            .strip()
            .startswith(completion.strip()[:10])
        )


def test_repo_context_on_a_format_without_repository_files_is_a_clear_error(tmp_path):
    from codetune.dataset.builder import build as build_dataset
    from codetune.dataset.config import BuildConfig
    from codetune.errors import ConfigError

    corpus = write_corpus(tmp_path / "corpus", repo_rows())
    with pytest.raises(ConfigError, match="repo_context needs rows that are files"):
        build_dataset(BuildConfig(corpus=corpus, format="seq2seq", repo_context=True, out=tmp_path / "ds"))


def test_the_repository_line_is_the_name_serve_gives_a_folder_not_the_corpus_id(tmp_path):
    """A corpus keys a local folder by its absolute path and a URL by host/owner/name; the context
    line is the bare name, as `serve --repo DIR` renders it (tests/serve: `<repo_name>alpha`)."""
    ids = {"alpha": "/home/dev/projects/alpha", "beta": "github.com/org/beta", "gamma": "gamma"}
    rows = [{**row, "repo": ids[row["repo"]]} for row in repo_rows()]
    _, data, tok = build(tmp_path, "tiny-starcoder2", rows=rows)
    texts = [tok.decode(row) for split in data.values() for row in split["input_ids"]]
    lines = {
        text.split("<repo_name>", 1)[1].split("<file_sep>", 1)[0] for text in texts if "<repo_name>" in text
    }
    assert lines == set(REPOS), lines
    assert not any("/home/dev" in text or "github.com" in text for text in texts)


def build_in_process(tmp_path: Path, corpus: Path, **settings) -> dict:
    """A `--repo-context` build of ``corpus`` through the Python API (so a test can count calls);
    its stats.json."""
    from codetune.dataset.builder import build as build_dataset
    from codetune.dataset.config import BuildConfig

    config = BuildConfig(
        corpus=corpus,
        out=tmp_path / "ds",
        model="tiny-starcoder2",
        repo_context=True,
        split_by="file",
        valid_fraction=0.2,
        test_fraction=0.2,
        num_proc=1,
        **settings,
    )
    build_dataset(config)
    return json.loads((tmp_path / "ds" / "stats.json").read_text())


def test_a_context_build_indexes_each_file_once_and_never_copies_the_vocabulary(tmp_path, monkeypatch):
    """What kept `--repo-context` 37x slower than a plain build: every split's index parsed the train
    files again, and every snippet priced or laid out copied the whole vocabulary (get_vocab)."""
    import codetune.languages
    from codetune.modeling.loading import load_tokenizer

    rows = repo_rows()
    corpus = write_corpus(tmp_path / "corpus", rows)
    tokenizer_class = type(load_tokenizer("tiny-starcoder2"))
    calls = {"parse": 0, "get_vocab": 0}
    parse, get_vocab = codetune.languages.parse, tokenizer_class.get_vocab

    def counted_parse(*args, **kwargs):
        calls["parse"] += 1
        return parse(*args, **kwargs)

    def counted_get_vocab(self):
        calls["get_vocab"] += 1
        return get_vocab(self)

    monkeypatch.setattr(codetune.languages, "parse", counted_parse)
    monkeypatch.setattr(tokenizer_class, "get_vocab", counted_get_vocab)
    stats = build_in_process(tmp_path, corpus)
    examples = stats["repo_context"]["examples"]
    assert stats["repo_context"]["examples_with_context"] > examples / 2
    assert calls["parse"] <= len(rows)  # one parse per file, for all three splits' indexes
    assert calls["get_vocab"] <= 10  # a few FimFormat lookups, none per example or snippet


def test_a_context_build_tokenizes_each_long_file_whole_once(tmp_path, monkeypatch):
    """Pricing context snippets by their spans in their files reuses the token boundaries found while
    cutting the files into blocks, instead of tokenizing every file whole a second time."""
    from codetune.modeling.loading import load_tokenizer

    rows = repo_rows()
    corpus = write_corpus(tmp_path / "corpus", rows)
    tokenizer_class = type(load_tokenizer("tiny-starcoder2"))
    whole = {row["content"]: 0 for row in rows}
    call = tokenizer_class.__call__

    def counted_call(self, text=None, *args, **kwargs):
        if kwargs.get("return_offsets_mapping"):
            for one in text if isinstance(text, list) else [text]:
                if one in whole:
                    whole[one] += 1
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(tokenizer_class, "__call__", counted_call)
    stats = build_in_process(tmp_path, corpus, max_length=96, fim_rate=0.0)
    assert stats["repo_context"]["examples_with_context"] > 0
    assert max(whole.values()) == 1, sorted(whole.values())


LINE_STARTS = [
    "local x = 1\n",
    "  indented = True\n",
    "\tTabbed()\n",
    "\nblank first\n",
    "éclair = 1\n",
    "'s quoted\n",
    "123 digits\n",
    "#!/bin/sh\n",
    "}\nclose\n",
    "<file_sep>main\n",
    "<|file_sep|>main\n",
    "",
]


# the families whose layout leads the text with the target's path line (Qwen2.5-Coder's puts it in
# the context's head)
@pytest.mark.parametrize("model", ["tiny-starcoder2", "tiny-gpt-bigcode"])
def test_a_rows_lead_and_text_are_the_tokens_of_both_tokenized_together(model):
    """A plain row's ids after its lead (the target's path line) are what tokenizing lead and text
    together gives, as serving does, for texts starting with anything (where the tokenizer allows,
    build joins the two tokenizations instead of tokenizing again)."""
    from codetune.context import ContextOptions
    from codetune.context.index import index_repositories
    from codetune.dataset.context import ExampleContext
    from codetune.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer(model)
    indexes = index_repositories([{"repo": "r", "path": "util.py", "text": "def f():\n    return 1\n"}])
    chooser = ExampleContext(tokenizer, indexes, {}, ContextOptions())

    def alone(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    rows = [("r", "src/main.py", text, alone(text)) for text in LINE_STARTS]
    chooser.prepare(rows, [], None)
    lead = chooser._lead("r", "src/main.py")
    assert lead.endswith("\n")
    for text in LINE_STARTS:
        assert chooser.text_ids(lead + text) == alone(lead + text), repr(text)
