"""Corpora, tokenizers and builds for dataset tests: sample files in three languages, a corpus folder
as `codetune collect` writes it, and `codetune build` run on it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from codetune.dataset.builder import build
from codetune.dataset.config import BuildConfig
from codetune.stage import StageResult

PYTHON_FILE = '''"""Geometry helpers."""

import math
from typing import Iterable


def area(radius: float) -> float:
    """Area of a circle of the given radius."""
    # pi r squared
    return math.pi * radius * radius


def total(values: Iterable[float]) -> float:
    """Sum of values, skipping negatives."""
    result = 0.0
    for value in values:
        if value < 0:
            continue
        result += value
    return result


class Point:
    """A point in the plane."""

    def __init__(self, x: float, y: float) -> None:
        self.x = x
        self.y = y

    def norm(self) -> float:
        return math.hypot(self.x, self.y)
'''

ELM_FILE = """module Counter exposing (Model, Msg(..), update, view)

import Html exposing (Html, button, div, text)
import Html.Events exposing (onClick)


{-| The counter's state. -}
type alias Model =
    { count : Int }


type Msg
    = Increment
    | Decrement


{-| Apply a message to the model. -}
update : Msg -> Model -> Model
update msg model =
    -- one step at a time
    case msg of
        Increment ->
            { model | count = model.count + 1 }

        Decrement ->
            { model | count = model.count - 1 }


view : Model -> Html Msg
view model =
    div []
        [ button [ onClick Decrement ] [ text "-" ]
        , text (String.fromInt model.count)
        , button [ onClick Increment ] [ text "+" ]
        ]
"""

KOTLIN_FILE = """package com.example.shapes

import kotlin.math.PI
import kotlin.math.sqrt

/** A shape with an area. */
interface Shape {
    fun area(): Double
}

/** A circle of radius [r]. */
class Circle(private val r: Double) : Shape {
    override fun area(): Double = PI * r * r
}

// Distance between two points.
fun distance(x1: Double, y1: Double, x2: Double, y2: Double): Double {
    val dx = x2 - x1
    val dy = y2 - y1
    return sqrt(dx * dx + dy * dy)
}

fun describe(shapes: List<Shape>): String {
    val total = shapes.sumOf { it.area() }
    return "shapes: ${shapes.size}, total area: $total"
}
"""

SAMPLES = {"python": (".py", PYTHON_FILE), "elm": (".elm", ELM_FILE), "kotlin": (".kt", KOTLIN_FILE)}


def variant(text: str, language: str, index: int) -> str:
    """A file distinct from its siblings (so MinHash does not merge them) but of the same shape."""
    comment = {"python": "#", "elm": "--", "kotlin": "//"}[language]
    words = " ".join(f"w{index}x{k}" for k in range(12))
    return text.replace("area", f"area{index}").replace("total", f"total{index}") + f"\n{comment} {words}\n"


def corpus_rows(
    repos: int = 4, files_per_repo: int = 3, languages: tuple[str, ...] = ("python", "elm", "kotlin")
) -> list[dict[str, Any]]:
    rows = []
    k = 0
    for r in range(repos):
        for _f in range(files_per_repo):
            language = languages[k % len(languages)]
            ext, text = SAMPLES[language]
            content = variant(text, language, k)
            rows.append(
                {
                    "path": f"src/file{k}{ext}",
                    "repo": f"repo{r}",
                    "language": language,
                    "content": content,
                    "bytes": len(content.encode()),
                    "lines": content.count("\n") + 1,
                    "sha256": hashlib.sha256(content.encode()).hexdigest(),
                }
            )
            k += 1
    return rows


def write_corpus(folder: Path, rows: list[dict[str, Any]], shards: int = 1) -> Path:
    """Write ``rows`` as data-*.parquet shards plus a manifest.json, like `codetune collect`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    size = max(1, -(-len(rows) // shards))
    for i in range(0, max(len(rows), 1), size):
        chunk = rows[i : i + size]
        columns = ["path", "repo", "language", "content", "bytes", "lines", "sha256"]
        table = (
            pa.table({c: [row[c] for row in chunk] for c in columns})
            if chunk
            else pa.table({c: pa.array([], pa.string()) for c in columns})
        )
        pq.write_table(table, folder / f"data-{i // size:05d}.parquet")
    manifest = {
        "sources": ["test"],
        "fingerprint": hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16],
        "totals": {"files": len(rows)},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def make_tokenizer(folder: Path, *, eos: bool = True) -> Path:
    """A small byte-level BPE tokenizer folder with no FIM tokens (and optionally no EOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<eos>", "<pad>"] if eos else ["<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([PYTHON_FILE, ELM_FILE, KOTLIN_FILE], trainer=trainer)
    kwargs = {"eos_token": "<eos>"} if eos else {}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", clean_up_tokenization_spaces=False, **kwargs
    )
    fast.save_pretrained(folder)
    return folder


def run_build(corpus: Path, out: Path, **options: Any) -> tuple[StageResult, Any, dict]:
    """Build and load back: (result, DatasetDict, stats)."""
    import json

    from datasets import load_from_disk

    options.setdefault("num_proc", 1)
    result = build(BuildConfig(corpus=corpus, out=out, **options))
    stats = json.loads((out / "stats.json").read_text())
    return result, load_from_disk(str(out)), stats


# Every document in train, nothing dropped as a near-duplicate: a build whose rows a test reads whole.
TRAIN_ONLY: dict[str, Any] = {"valid_fraction": 0.0, "test_fraction": 0.0, "decontam": {"minhash": False}}


def corpus_row(path: str, content: str, repo: str = "repo", language: str | None = None) -> dict[str, Any]:
    """One corpus row as collect writes it (the language from the path unless given)."""
    from codetune.languages import language_for_path

    found = language or getattr(language_for_path(path), "name", "")
    assert found, path
    return {
        "path": path,
        "repo": repo,
        "language": found,
        "content": content,
        "bytes": len(content.encode()),
        "lines": content.count("\n"),
        "sha256": path,
    }


def units_of(tmp_path: Path, files: dict[str, str], name: str = "ds", **units: Any) -> list[str]:
    """The unit texts ``--format units`` cuts from ``files`` (path -> content, the language from the
    path), in one repository, all in train, in order."""
    rows = [corpus_row(path, content) for path, content in files.items()]
    corpus = write_corpus(tmp_path / f"corpus-{name}", rows)
    _, dataset, _ = run_build(
        corpus,
        tmp_path / name,
        format="units",
        fim_rate=0.0,
        max_length=4096,
        units=units,
        **TRAIN_ONLY,
    )
    return list(dataset["train"]["text"])


def all_rows(dataset: Any) -> list[tuple[str, dict]]:
    return [(split, row) for split in dataset for row in dataset[split]]
