"""Configuration of the build stage: common options plus one typed section per format."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from codetune.schema import StrictModel


class WindowsOptions(StrictModel):
    """Sliding-window prompt/completion pairs (the Kotlin use case)."""

    prompt_tokens: int = Field(100, gt=0, description="Prompt length P in tokens (upper bound).")
    completion_tokens: int = Field(35, gt=0, description="Completion length C in tokens (upper bound).")
    stride: int | None = Field(
        None,
        gt=0,
        description="Tokens the completion start moves each step (default: completions tile the file).",
    )
    snap_chars: str = Field(
        "\n;,.(){}[]:= \t\"'",
        description="A boundary may only fall right after one of these characters (or at a line end).",
    )
    min_completion_tokens: int = Field(2, ge=1, description="Shorter completions are dropped.")


class UnitsOptions(StrictModel):
    """Tree-sitter syntax units: functions, methods, classes, types (the Elm use case)."""

    mode: Literal["text", "prompt"] = Field(
        "text", description="text: the unit as one text; prompt: header/signature (+doc) -> body."
    )
    doc: bool = Field(True, description="Keep the doc comment (and type annotation) right before a unit.")
    drop_comments: bool = Field(False, description="Remove comments inside units.")
    drop_imports: bool = Field(False, description="Remove import/module/package declarations.")
    types: list[str] | None = Field(
        None, description="Node types that count as units (default: the language registry's)."
    )
    min_chars: int = Field(10, ge=0, description="Shorter units are dropped.")
    nested: bool = Field(
        False,
        description="Also take the members of classes (methods, inner classes) as units, so their text "
        "is in two units; definitions inside functions (an Elm let) never are.",
    )


class InstructOptions(StrictModel):
    """Instruction/response pairs from JSONL, a doccano export, or docstring -> function pairs."""

    source: Literal["auto", "jsonl", "doccano", "docstrings"] = Field(
        "auto",
        description="auto: corpus folder -> docstrings; doccano-shaped JSONL -> doccano; else jsonl.",
    )
    instruction_field: str = Field("instruction", description="JSONL field holding the instruction.")
    input_field: str | None = Field("input", description="Optional JSONL field appended to the instruction.")
    response_field: str = Field("output", description="JSONL field holding the response.")
    doccano_text_field: str = Field("text", description="doccano: the annotated text.")
    doccano_label_field: str = Field("label", description="doccano: spans [start, end, label] or strings.")
    doccano_instruction_label: str = Field(
        "instruction", description="doccano: span label whose text is the instruction."
    )
    template: str = Field(
        "### Instruction:\n{instruction}\n\n### Response:\n",
        description="Prompt template used when the tokenizer has no chat template.",
    )
    use_chat_template: bool = Field(True, description="Use the tokenizer's chat template when it has one.")


class Seq2SeqOptions(StrictModel):
    """Source/target pairs for encoder-decoder models (the CoNaLa use case)."""

    source_fields: list[str] = Field(["intent", "snippet"], description="Fields joined into the source.")
    separator: str = Field("\n", description="Joins the source fields.")
    target_field: str = Field("rewritten_intent", description="Field holding the target.")
    max_target_length: int | None = Field(None, gt=0, description="Target token limit (default max_length).")


class CodeJsonOptions(StrictModel):
    """JSONL ``{"code": ...}`` files, as PaddleNLP's CodeGen fine-tuning takes them."""

    field: str = Field("code", description="JSON field holding the code.")


class FeedbackOptions(StrictModel):
    """Editor records (``codetune serve --record``, Continue's dev data) -> preference and FIM rows."""

    objectives: list[Literal["sft", "kto", "dpo"]] = Field(
        ["sft", "kto", "dpo"],
        description="Rows to write: sft (accepted text as a plain FIM target), kto (accepted and "
        "rejected, labelled), dpo (accepted vs rejected on the same or nearly the same prompt).",
    )
    typed: bool = Field(
        True,
        description="Learn what the developer typed: where a suggestion was not taken and a later prompt of "
        "the same file shows how the cursor's line went on, that line is a desirable completion of the "
        "prompt (an sft row, a kto row labelled 1, and the chosen side of a dpo pair against the rejected "
        "suggestion), without the end token: the developer went on typing after it.",
    )
    pair_max_chars: int = Field(
        64,
        ge=0,
        description="Two prompts are nearly the same when they share the suffix and one prefix extends "
        "the other by at most this many characters (the developer typed on); pairs and splits use it.",
    )
    max_pairs_per_accepted: int = Field(
        4, ge=1, description="DPO pairs per accepted completion, nearest first."
    )
    prefix_ratio: float = Field(
        0.75, gt=0, lt=1, description="A prompt over max_length keeps this share of its room for the prefix."
    )


class FimSyntaxOptions(StrictModel):
    """What a syntax-aware FIM middle may be (``fim_split: syntax``): a statement, block or expression."""

    min_tokens: int = Field(3, ge=1, description="Shorter nodes are never the middle.")
    max_tokens: int = Field(256, ge=1, description="Longer nodes are never the middle.")


class DecontamOptions(StrictModel):
    """Near-duplicate removal of test documents against train, and benchmark decontamination."""

    minhash: bool = Field(True, description="Drop test documents that near-duplicate a train document.")
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity counted as a near-duplicate.")
    num_perm: int = Field(64, ge=16, description="MinHash permutations.")
    shingle: int = Field(5, ge=1, description="Word n-gram size of the MinHash shingles.")
    benchmarks: list[Path] = Field(
        default_factory=list, description="Benchmark files (text/JSON/JSONL) to keep out of every split."
    )
    ngram: int = Field(10, ge=3, description="Word n-gram size for benchmark overlap.")
    min_substring_chars: int = Field(
        50, ge=10, description="Benchmark snippets at least this long are also matched verbatim."
    )


class RepoContextOptions(StrictModel):
    """Where ``repo_context`` takes its snippets from (codetune.context, the builder serve uses too)."""

    strategies: list[Literal["imports", "definitions", "bm25"]] = Field(
        ["imports", "definitions", "bm25"],
        description="In order: files the target imports, definitions of names used near the cursor, "
        "BM25 chunks most like the text around it.",
    )
    query_lines: int = Field(12, ge=1, description="Lines around the cursor that make the query.")
    max_file_tokens: int = Field(
        256, ge=1, description="An imported file longer than this gives only its definitions."
    )
    bm25_chunks: int = Field(8, ge=0, description="BM25 chunks considered per example.")


class MixSource(StrictModel):
    """Another input built with its own format and added to the main dataset's train and valid splits."""

    format: str = Field(description="Dataset format of this input, e.g. instruct for a doccano export.")
    corpus: Path = Field(description="Its corpus folder or JSON/JSONL file.")


class BuildConfig(StrictModel):
    """Turn a corpus into a tokenized dataset with train/valid/test splits."""

    corpus: Path | None = Field(
        None,
        description="Corpus folder (default: the collect stage's output), or a JSON/JSONL file or "
        "folder for instruct, seq2seq and code_json, or a records folder (or file) for feedback.",
    )
    format: str = Field(
        "files", description="Dataset format: files, windows, units, instruct, seq2seq, code_json, feedback."
    )
    model: str = Field("tiny-gpt-bigcode", description="Model or tokenizer whose tokenizer is used.")
    out: Path | None = Field(None, description="Dataset folder (default: WORKDIR/dataset).")
    max_length: int = Field(512, gt=8, description="Maximum tokens per example.")
    overlong: Literal["split", "trim", "drop"] = Field(
        "split",
        description="Examples over max_length: split (files and code_json: consecutive blocks at line "
        "ends; units: blocks where members or statements begin; nothing lost; prompt/completion rows "
        "are trimmed), trim, or drop (counted and warned about either way).",
    )
    valid_fraction: float = Field(0.05, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    split_by: Literal["auto", "repo", "directory", "file", "time"] = Field(
        "auto",
        description="auto: by repository when there are at least three and none holds half the files, "
        "else by file (said in a warning); directory: whole directories; time: test holds the files "
        "changed in the newest commits, valid those just before (needs a local git checkout or a "
        "'changed' corpus column).",
    )
    split_fallback: bool = Field(
        True,
        description="By repository: when no set of whole repositories comes near a fraction, take that "
        "split from files inside repositories (warned, and recorded in stats.json).",
    )
    fim_rate: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of text examples turned into FIM (causal models only; ignored for seq2seq "
        "unless set explicitly, which is an error).",
    )
    fim_spm_rate: float = Field(0.5, ge=0, le=1, description="Share of FIM examples in SPM order.")
    fim_split: Literal["random", "syntax"] = Field(
        "random", description="random: uniform token-level split points; syntax: the middle is one node."
    )
    fim_syntax: FimSyntaxOptions = Field(default_factory=FimSyntaxOptions)
    repo_context: bool = Field(
        False,
        description="Give each example (files, FIM, windows, units) context from other files of its "
        "repository, laid out as serve lays it out; only train files (and, for a held-out split, its "
        "own files) are ever used, so no held-out file reaches a training example.",
    )
    repo_context_budget: int = Field(
        256,
        gt=0,
        description="Most tokens of context per example; the example still fits max_length, the "
        "context is cut first (and file blocks leave up to half of max_length for it).",
    )
    repo_context_options: RepoContextOptions = Field(default_factory=RepoContextOptions)
    seed: int = 0
    num_proc: int | None = Field(
        None, ge=1, description="Worker processes for datasets.map (default: auto by size)."
    )
    windows: WindowsOptions = Field(default_factory=WindowsOptions)
    units: UnitsOptions = Field(default_factory=UnitsOptions)
    instruct: InstructOptions = Field(default_factory=InstructOptions)
    seq2seq: Seq2SeqOptions = Field(default_factory=Seq2SeqOptions)
    code_json: CodeJsonOptions = Field(default_factory=CodeJsonOptions)
    feedback: FeedbackOptions = Field(default_factory=FeedbackOptions)
    decontam: DecontamOptions = Field(default_factory=DecontamOptions)
    mix: list[MixSource] = Field(
        default_factory=list,
        description="More inputs in other formats (e.g. doccano instruction pairs beside code files), "
        "built with the same tokenizer and options; their rows join train, their held-out rows join "
        "valid, so the test split stays the main format's.",
    )
