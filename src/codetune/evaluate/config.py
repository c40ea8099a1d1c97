"""Configuration of the eval stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from codetune.evaluate.tasks import TASKS
from codetune.schema import StrictModel

DEFAULT_METRICS = ["exact_match", "edit_sim", "bleu", "sacrebleu_bleu", "chrf"]
# Prompts per task when `samples` is not given scale with the held-out files: a project of 8 test
# files is not made to wait on 200 prompts (27 minutes on a CPU), and a big one stops at 200.
SAMPLES_PER_FILE = 8
MIN_SAMPLES = 24
MAX_SAMPLES = 200


class EvalConfig(StrictModel):
    """Compare models side by side on a dataset's held-out split, prompt files and benchmark files."""

    models: list[str] = Field(default_factory=list, description="Models or run folders; NAME=PATH names one.")
    dataset: Path | None = Field(None, description="Dataset folder (default: the build stage's output).")
    out: Path | None = Field(None, description="Report folder (default: WORKDIR/report).")
    tasks: list[str] = Field(
        default_factory=lambda: ["completion", "loss"],
        description=f"Tasks to run, of: {', '.join(TASKS)} (those without inputs are skipped).",
    )
    metrics: list[str] = Field(
        default_factory=lambda: list(DEFAULT_METRICS), description="Reference metrics."
    )
    samples: int | None = Field(
        None,
        gt=0,
        description=f"Prompts per task (default: {SAMPLES_PER_FILE} per held-out file, at least "
        f"{MIN_SAMPLES} and at most {MAX_SAMPLES}; benchmark files: the first {MAX_SAMPLES} problems).",
    )
    line_cut: Literal["line", "mid"] = Field(
        "line",
        description="Line completion: line = complete the whole next line; mid = the prompt runs to a random "
        "point inside the line (after its indentation) and the rest of the line is completed.",
    )
    max_new_tokens: int = Field(48, gt=0)
    max_prompt_tokens: int = Field(1024, gt=0, description="Prompts are cut on the left to this many tokens.")
    temperature: float = Field(0.0, ge=0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, gt=0, description="Generations per prompt (prompt files, execution).")
    seed: int = 0
    batch_size: int = Field(8, gt=0)
    device: str | None = Field(None, description="cpu, cuda, mps (default: the best available).")
    language: str | None = Field(
        None, description="Language for syntax checks (default: from file extensions)."
    )
    prompts: Path | None = Field(None, description='Prompt file: JSON list or JSONL of {"prompt": ...}.')
    benchmark: Path | None = Field(None, description="A CodeXGLUE method-generation or line-completion file.")
    benchmark_style: Literal["codexglue-method", "codexglue-line"] | None = Field(
        None, description="Format of the benchmark file (default: guessed from its fields)."
    )
    problems: Path | None = Field(
        None,
        description="HumanEval/MultiPL-E JSONL for pass@k, or a HumanEval infilling file "
        "(humaneval-infilling; default: the bundled single-line file).",
    )
    safim: Path | None = Field(None, description="A SAFIM file (block, control or api split), .jsonl[.gz].")
    crosscodeeval: Path | None = Field(
        None,
        description="A CrossCodeEval line-completion file: scored with and without its cross-file context.",
    )
    records: Path | None = Field(
        None,
        description="A records folder (serve --record, records import-continue): the acceptance task replays "
        "its suggestions and scores each by what the developer kept or went on to type.",
    )
    records_newest: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Acceptance: replay only the newest share of the records (1: all; give a folder or a "
        "share the model was not trained on).",
    )
    fim_missing: Literal["skip", "prefix"] = Field(
        "skip",
        description="Fill-in-the-middle tasks (humaneval-infilling, fim, safim) on a model without FIM tokens: "
        "skip them, or send the prefix alone, left to right, as serve answers such a model (the report "
        "marks the task; its scores are not comparable with published FIM results).",
    )
    context: Literal["both", "without", "with"] = Field(
        "both",
        description="Editor replay and CrossCodeEval: run without and/or with repository context (the "
        "`_context` tasks; report.md and report.json give the difference per model and metric).",
    )
    context_tokens: int = Field(
        512,
        gt=0,
        description="Token budget of the repository context (editor replay: retrieved from the other files "
        "of the cursor's repository, as serve --repo does; CrossCodeEval: its own retrieved chunks).",
    )
    limit: int | None = Field(None, gt=0, description="Use only the first N problems of a benchmark file.")
    allow_execution: bool = Field(False, description="Run generated code (sandboxed) for pass@k.")
    unsafe_network: bool = Field(
        False, description="Run generated code even where the network cannot be cut."
    )
    unsafe_mount: bool = Field(
        False, description="Run generated code even where the host filesystem cannot be hidden."
    )
    unsafe_pid: bool = Field(
        False, description="Run generated code even without a pid namespace (host processes visible)."
    )
    exec_command: list[str] | None = Field(
        None, description="Command that runs a program ({file}, {dir}); default: this Python."
    )
    exec_extension: str = Field(".py", description="File extension of the programs run.")
    exec_timeout: float = Field(10.0, gt=0, description="Wall-clock seconds per program.")
    exec_memory_mb: int = Field(
        1024, gt=0, description="Address-space limit per program (raise it for JVMs)."
    )
    exec_max_processes: int = Field(32, gt=0, description="Processes + threads per program.")
    k: list[int] = Field(default_factory=lambda: [1, 10, 100], description="pass@k values.")
    sweep_temperature: list[float] = Field(default_factory=list, description="Sampling sweep: temperatures.")
    sweep_top_p: list[float] = Field(default_factory=list, description="Sampling sweep: top_p values.")
    loss_examples: int = Field(200, gt=0, description="Test rows used for loss / perplexity.")
    side_by_side: int = Field(3, ge=0, description="Sample completions shown side by side in report.md.")

    def scaled_to(self, rows: list[dict[str, Any]]) -> tuple[EvalConfig, str | None]:
        """This config with ``samples`` set (as given, else scaled to the held-out files among ``rows``),
        and a sentence saying how it was scaled (None when given)."""
        if self.samples is not None:
            return self, None
        files = len({row.get("path") or index for index, row in enumerate(rows)})
        if not files:
            return self.model_copy(update={"samples": MAX_SAMPLES}), None
        samples = min(MAX_SAMPLES, max(MIN_SAMPLES, SAMPLES_PER_FILE * files))
        rule = (
            f"{samples} prompts per task: {SAMPLES_PER_FILE} per held-out file ({files}), at least {MIN_SAMPLES} "
            f"and at most {MAX_SAMPLES} (--set samples=N to choose)"
        )
        return self.model_copy(update={"samples": samples}), rule
