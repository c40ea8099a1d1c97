"""The command line: parse arguments, call a stage, print a summary. No stage logic lives here."""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from codetune.cli_options import Spelling
from codetune.errors import CodetuneError, ConfigError, InputError
from codetune.evaluate.tasks import STYLES as SCORE_STYLES
from codetune.languages import language_names
from codetune.quickstart import QuickstartSettings
from codetune.stages import STAGE_NAMES

try:  # typer >= 0.26 carries its own copy of click
    from typer._click.exceptions import NoSuchOption
except ImportError:  # pragma: no cover - older typer on plain click
    from click.exceptions import NoSuchOption


class CodetuneGroup(TyperGroup):
    """Typer's command group, whose "No such option" also says how to set any config field."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except NoSuchOption as error:
            command = error.ctx.command if error.ctx else None
            if command is not None and any("--set" in param.opts for param in command.params):
                key = error.option_name.lstrip("-").replace("-", "_")
                error.message = (
                    f"{error.format_message().rstrip('.')}. Any config field can be given as --set KEY=VALUE, "
                    f"e.g. --set {key}=VALUE (nested ones as section.field); "
                    f"`{error.ctx.command_path} --help` lists the options."
                )
                error.possibilities = None  # already in the message
            raise


app = typer.Typer(
    cls=CodetuneGroup,
    name="codetune",
    help="Specialise an open code LLM for a language or codebase: collect -> build -> train -> merge -> "
    "eval -> generate/serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
tokenizer_app = typer.Typer(cls=CodetuneGroup, help="Train or inspect tokenizers.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")
doccano_app = typer.Typer(
    cls=CodetuneGroup,
    help="Hand docs-site code samples to doccano for annotation and take them back.",
    no_args_is_help=True,
)
app.add_typer(doccano_app, name="doccano")
sandbox_app = typer.Typer(help="Inspect and use the sandbox that runs generated code.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
records_app = typer.Typer(
    cls=CodetuneGroup,
    help="Editor records: what was suggested, what developers kept (build --format feedback learns from them).",
    no_args_is_help=True,
)
app.add_typer(records_app, name="records")

console = Console(stderr=True)
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any config field: KEY=VALUE (value read as YAML). Repeatable."),
]

DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Plan the run without weights or network: parameters, memory per method, tokens per step.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="With --dry-run: print the plan as JSON.")]


def _config(model_cls: type, given: dict[str, Any], overrides: list[str] | None) -> Any:
    from codetune.config import apply_overrides, validate

    data = {key: value for key, value in given.items() if value is not None}
    return validate(model_cls, apply_overrides(data, overrides or []), where="options")


def _stage_config(name: str, given: dict[str, Any], overrides: list[str] | None) -> Any:
    """The registered stage's config from command-line options and ``--set`` overrides."""
    from codetune.stages import get_stage

    return _config(get_stage(name).config_class, given, overrides)


def _run_stage(name: str, given: dict[str, Any], overrides: list[str] | None) -> Any:
    """Validate the options into the stage's config and run the stage (one path for every command)."""
    from codetune.stages import get_stage

    return get_stage(name).run(_stage_config(name, given, overrides))


def print_result(result: Any) -> None:
    """Print what a stage wrote where, as a small table."""
    from codetune.stage import StageResult

    results = result if isinstance(result, list) else [result]
    for item in results:
        if not isinstance(item, StageResult):
            continue
        title = f"{item.stage}: {'unchanged, skipped' if item.skipped else 'done'} -> {item.out}"
        _print_counts(title, item.summary)


def _print_counts(title: str, counts: dict[str, Any]) -> None:
    """A titled two-column table of names and values on stderr."""
    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in counts.items():
        table.add_row(str(key), f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


def option(name: str, kind: Any, *decls: str, help: str, default: Any = None) -> inspect.Parameter:
    """A command-line parameter that is not a config field."""
    declared = typer.Option(*decls, help=help)
    annotation = Annotated[kind, declared]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


OVERRIDES = inspect.Parameter("overrides", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=SetOption)
DRY_RUN = inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=DryRunOption)
AS_JSON = inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonOption)


def _print_plans(plans: dict[str, Any], as_json: bool) -> None:
    import json

    from codetune.train.dryrun import render

    if as_json:
        typer.echo(json.dumps(plans if len(plans) != 1 else next(iter(plans.values())), indent=1))
        return
    typer.echo(
        "\n\n".join(
            f"[{name}]\n{render(plan)}" if len(plans) > 1 else render(plan) for name, plan in plans.items()
        )
    )


def stage_command(name: str, spelling: Spelling, doc: str, run: Any = None, extra: tuple = ()) -> None:
    """Add the command that runs stage ``name``: its config's fields as options (``cli_options``),
    ``--set`` for any other field, and ``extra`` parameters handled by ``run(given, overrides, ...)``."""
    from codetune.cli_options import config_command
    from codetune.stages import get_stage

    def default_run(given: dict[str, Any], overrides: list[str] | None) -> None:
        print_result(_run_stage(name, given, overrides))

    command = config_command(
        get_stage(name).config_class, spelling, run or default_run, extra=[*extra, OVERRIDES], doc=doc
    )
    app.command(name)(command)


def _train(given: dict[str, Any], overrides: list[str] | None, dry_run: bool, as_json: bool) -> None:
    if dry_run:
        from codetune.train.dryrun import plan

        _print_plans({"train": plan(_stage_config("train", given, overrides))}, as_json)
        return
    if "dataset" not in given:
        raise ConfigError("--dataset is required (only --dry-run plans a run without one)")
    print_result(_run_stage("train", given, overrides))


def _serve(given: dict[str, Any], overrides: list[str] | None, adapter: list[str] | None) -> None:
    single, named = _adapter_options(adapter or [])
    given = {**given, "adapter": single, "adapters": named or None}
    _run_stage("serve", {k: v for k, v in given.items() if v is not None}, overrides)


ADAPTER = option(
    "adapter",
    list[str] | None,
    "--adapter",
    help="NAME=RUN_DIR: a LoRA run served over --model as model NAME. Repeatable. "
    "A lone RUN_DIR (no NAME=) applies that run's adapter to the one served model.",
)

stage_command(
    "collect",
    Spelling(
        arguments=("sources",),
        short={"language": "-l", "out": "-o", "workers": "-j"},
        required=("language", "out"),
        notes={"language": f"Known: {', '.join(language_names())}."},
    ),
    "Gather and clean source files into a corpus (Parquet + manifest.json).",
)
stage_command(
    "build",
    Spelling(
        arguments=("corpus",),
        short={"format": "-f", "model": "-m", "out": "-o"},
        defaults={"out": Path("dataset")},
    ),
    "Turn a corpus into a tokenized dataset with leak-free splits.",
)
stage_command(
    "train",
    Spelling(
        short={"model": "-m", "dataset": "-d", "out": "-o"},
        required=("model",),
        defaults={"out": Path("run")},
    ),
    "Fine-tune a model (LoRA, AdaLoRA, QLoRA or full) on a dataset.",
    _train,
    (DRY_RUN, AS_JSON),
)
stage_command(
    "merge",
    Spelling(arguments=("run",), short={"out": "-o"}, required=("out",)),
    "Merge a run's adapter into its base model (plain Hugging Face format).",
)
stage_command(
    "export",
    Spelling(arguments=("model",), short={"out": "-o", "format": "-f"}, required=("out",)),
    "Write a run or model as GGUF (llama.cpp, Ollama, LM Studio) with its FIM tokens and a Modelfile.",
)
stage_command(
    "eval",
    Spelling(
        rename={"models": "model", "tasks": "task"},
        short={"models": "-m", "out": "-o", "dataset": "-d", "language": "-l"},
        required=("models", "out"),
    ),
    "Evaluate models side by side on held-out data; writes report.md/json and plots.",
)
stage_command(
    "generate",
    Spelling(short={"model": "-m", "input": "-i", "out": "-o"}, required=("model", "input", "out")),
    "Generate completions for a file of prompts, in length-sorted batches; resumable.",
)
stage_command(
    "serve",
    Spelling(
        rename={"repos": "repo", "cors_origins": "cors_origin"},
        short={"model": "-m"},
        required=("model",),
        skip=("adapter", "adapters"),
    ),
    "Serve an OpenAI-compatible completions API (with FIM, Copilot and editor routes).",
    _serve,
    (ADAPTER,),
)


@app.command()
def score(
    predictions: Annotated[
        Path,
        typer.Option("--predictions", "-p", help="One prediction per line, or {task_id, completion} JSONL."),
    ],
    references: Annotated[
        Path | None, typer.Option("--references", "-r", help="One reference per line (CodeXGLUE styles).")
    ] = None,
    style: Annotated[
        str, typer.Option("--style", help=f"One of: {', '.join(SCORE_STYLES)}.")
    ] = "codexglue-method",
    problems: Annotated[
        Path | None,
        typer.Option(
            "--problems", help="humaneval-infilling problems file (.jsonl[.gz]); default: the bundled one."
        ),
    ] = None,
    allow_execution: Annotated[
        bool, typer.Option("--allow-execution", help="Run completions as programs in the sandbox.")
    ] = False,
    unsafe_network: Annotated[
        bool, typer.Option("--unsafe-network", help="Run even where the network cannot be isolated.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Score predictions files as the eval tasks that have each style do (CodeXGLUE's evaluators, the
    HumanEval infilling harness)."""
    import json

    from codetune.evaluate.tasks.base import ScoreFiles
    from codetune.evaluate.tasks.build import score_files

    files = ScoreFiles(predictions, references, problems, allow_execution, unsafe_network)
    scores = score_files(style, files)
    if as_json:
        typer.echo(json.dumps(scores))
        return
    table = Table(title=f"score ({style})", show_header=False, title_justify="left")
    for key, value in scores.items():
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    Console().print(table)


def _adapter_options(values: list[str]) -> tuple[Path | None, dict[str, Path]]:
    """``--adapter`` values: one bare run folder, or NAME=RUN_DIR pairs (not both)."""
    named: dict[str, Path] = {}
    bare = [value for value in values if "=" not in value]
    if bare and (len(values) > 1):
        raise ConfigError(f"--adapter {bare[0]}: with several adapters name each one, --adapter NAME=RUN_DIR")
    if bare:
        return Path(bare[0]), {}
    for value in values:
        name, _, folder = value.partition("=")
        if not name or not folder:
            raise ConfigError(f"--adapter {value!r}: expected NAME=RUN_DIR")
        if name in named:
            raise ConfigError(f"--adapter: the name {name!r} is given twice")
        named[name] = Path(folder)
    return None, named


@sandbox_app.command("check")
def sandbox_check(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Print which isolation layers are active here (network, mount, pid, user, cgroups, seccomp, limits)."""
    import json

    from codetune.evaluate.sandbox import probe

    plan = probe()
    if as_json:
        layers = {layer.name: {"active": layer.active, "detail": layer.detail} for layer in plan.layers}
        typer.echo(json.dumps({"layers": layers, "missing": plan.missing()}, indent=2))
        return
    table = Table(title=f"sandbox layers (uid {os.geteuid()})", title_justify="left")
    for column in ("layer", "active", "how / why not"):
        table.add_column(column)
    for layer in plan.layers:
        table.add_row(layer.name, "yes" if layer.active else "no", layer.detail)
    Console().print(table)
    if plan.missing():
        flags = " ".join(f"--unsafe-{name}" for name in plan.missing())
        console.print(f"eval refuses to run generated code here unless given {flags}")


@sandbox_app.command("run")
def sandbox_run(
    file: Annotated[Path, typer.Argument(help="Program to run, e.g. main.py.")],
    command: Annotated[
        list[str] | None,
        typer.Option("--command", help="Command word ({file}, {dir}); repeat (default: this Python)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    unsafe_network: Annotated[bool, typer.Option("--unsafe-network")] = False,
    unsafe_mount: Annotated[bool, typer.Option("--unsafe-mount")] = False,
    unsafe_pid: Annotated[bool, typer.Option("--unsafe-pid")] = False,
    overrides: SetOption = None,
) -> None:
    """Run FILE under exactly the limits eval uses (eval's exec_* settings, --set to change them)."""
    import dataclasses
    import json

    from codetune.evaluate.config import EvalConfig
    from codetune.evaluate.sandbox import eval_limits, run_sandboxed

    cfg = _config(EvalConfig, {}, overrides)
    if not file.is_file():
        raise InputError(f"file not found: {file}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{file}: not UTF-8 text") from None
    flags = {"network": unsafe_network, "mount": unsafe_mount, "pid": unsafe_pid}
    result = run_sandboxed(
        list(command or cfg.exec_command or [sys.executable, "{file}"]),
        {file.name: text},
        limits=eval_limits(cfg.exec_timeout, cfg.exec_memory_mb, cfg.exec_max_processes),
        unsafe=[name for name, given in flags.items() if given],
    )
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(result)))
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        console.print(f"{result.status} (exit {result.returncode}, {result.seconds:.2f}s)")
    raise typer.Exit(0 if result.passed else 1)


@tokenizer_app.command("train")
def tokenizer_train(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder (or a folder of source files).")],
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="Vocabulary size.")] = 4096,
    out: Annotated[Path, typer.Option("--out", "-o", help="Tokenizer folder to write.")] = Path("tokenizer"),
) -> None:
    """Train a byte-level BPE tokenizer (with FIM tokens) on a corpus."""
    from codetune.modeling.tokenizer import train_tokenizer

    print_result(train_tokenizer(corpus, vocab_size=vocab_size, out=out))


@doccano_app.command("export")
def doccano_export(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder holding docs:URL records.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="doccano JSONL file to import into doccano.")],
) -> None:
    """Write a corpus's documentation code samples as doccano JSONL, to annotate with instructions."""
    from codetune.collect.docs import export_doccano

    count = export_doccano(corpus, out)
    console.print(f"doccano export: {count} records -> {out}")


@doccano_app.command("import")
def doccano_import(
    export: Annotated[Path, typer.Argument(help="The JSONL file exported from doccano after annotation.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Instruction pairs JSONL for `build --format instruct`.")
    ],
) -> None:
    """Turn doccano's annotated export into instruction/response pairs."""
    from codetune.collect.docs import import_doccano

    count = import_doccano(export, out)
    console.print(f"instruction pairs: {count} -> {out}")


@records_app.command("import-continue")
def records_import_continue(
    source: Annotated[
        Path, typer.Argument(help="Continue's ~/.continue/dev_data/0.2.0/autocomplete.jsonl (or 0.1.0/).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Records folder to append to.")],
) -> None:
    """Import Continue's autocomplete dev data (suggestions and accepts) into a records folder."""
    from codetune.feedback.continue_dev import import_continue

    _print_counts(f"continue import -> {out}", import_continue(source, out))


def _flat(report: dict[str, Any]) -> dict[str, Any]:
    """``{"before": {"shown": 3}}`` as ``{"before shown": 3}``, for one table."""
    return {
        f"{key} {inner}" if isinstance(value, dict) else key: v
        for key, value in report.items()
        for inner, v in (value.items() if isinstance(value, dict) else [(None, value)])
    }


@records_app.command("stats")
def records_stats(
    records: Annotated[Path, typer.Argument(help="Records folder (or one records JSONL file).")],
    keep_accepted: Annotated[
        float | None,
        typer.Option(
            "--keep-accepted",
            help="Also fit a confidence threshold keeping this share of accepted suggestions (e.g. 0.95) and "
            "report what it would remove.",
        ),
    ] = None,
    signal: Annotated[str, typer.Option("--signal", help="mean_logprob or logistic.")] = "mean_logprob",
    cut: Annotated[
        bool,
        typer.Option(
            "--cut",
            help="Also fit the floor of serve --cut-below auto and report what cutting the suggestions there "
            "would change.",
        ),
    ] = False,
    holdout: Annotated[
        float, typer.Option("--holdout", help="Newest share of records the threshold is reported on.")
    ] = 0.25,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Counts of a records folder (acceptance rate, problems met); with --keep-accepted, suggest less."""
    import json

    from codetune.artifacts.records import read_records

    report: dict[str, Any] = read_records(records).summary()
    if keep_accepted is not None:
        from codetune.feedback.confidence import suggest_less

        gate, found = suggest_less(records, keep_accepted, signal, holdout)
        report["confidence"] = {"gate": gate.to_dict(), **found}
    if cut:
        from codetune.feedback.cut import cut_on_records

        report["cut"] = cut_on_records(records, holdout)[1]
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    _print_counts(f"records {records}", {k: v for k, v in report.items() if k not in ("confidence", "cut")})
    for name, part in report.get("confidence", {}).items():
        if name != "gate":
            _print_counts(f"confidence threshold ({name.replace('_', '-')})", part)
    for name, part in report.get("cut", {}).items():
        _print_counts(
            f"cut below (floor {report['cut']['fit']['floor']}, {name.replace('_', '-')})", _flat(part)
        )


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    stages: Annotated[
        str | None,
        typer.Option("--stages", help="Comma-separated stages to run: " + ", ".join(STAGE_NAMES) + "."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rerun stages whose outputs are up to date.")
    ] = False,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
    overrides: SetOption = None,
) -> None:
    """Run every stage of a recipe, skipping stages whose inputs and config are unchanged."""
    if dry_run:
        from codetune.runner import plan_recipe

        _print_plans(plan_recipe(recipe, overrides=overrides or []), as_json)
        return
    from codetune.runner import run_recipe

    only = [s.strip() for s in stages.split(",")] if stages else None
    print_result(run_recipe(recipe, overrides=overrides or [], stages=only, force=force))


@app.command()
def quickstart(
    source: Annotated[
        Path | None, typer.Option("--source", help="Code folder (default: Python stdlib).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for every stage's output.")] = Path(
        "quickstart-out"
    ),
    pretrain_steps: Annotated[
        int | None,
        typer.Option(
            min=1, help="Pretrain a base here for this many steps (cached) instead of using the shipped one."
        ),
    ] = None,
    adapt_steps: Annotated[
        int, typer.Option(min=1, help="LoRA steps on the project.")
    ] = QuickstartSettings.adapt_steps,
    samples: Annotated[
        int, typer.Option(min=1, help="Held-out prompts evaluated per task.")
    ] = QuickstartSettings.samples,
    seed: Annotated[
        int,
        typer.Option(
            min=0, help="Seed of the LoRA run and of the eval's draw of prompts (the held-out files stay)."
        ),
    ] = QuickstartSettings.seed,
    repo_context: Annotated[
        bool,
        typer.Option(
            "--repo-context",
            help="Adapt on examples carrying context from the project's other files (build repo_context).",
        ),
    ] = False,
    rebuild_base: Annotated[
        Path | None,
        typer.Option(
            "--rebuild-base",
            help="Only pretrain the shipped base again into this folder (src/codetune/assets/quickstart-base).",
        ),
    ] = None,
) -> None:
    """End to end on your machine, offline, CPU only: adapt a tiny pretrained base, evaluate it."""
    from codetune.quickstart import quickstart as run_quickstart

    if rebuild_base is not None:
        from codetune.quickstart.base import rebuild

        print_result([rebuild(rebuild_base, say=console.print)])
        return
    settings = QuickstartSettings(
        pretrain_steps=pretrain_steps,
        adapt_steps=adapt_steps,
        samples=samples,
        repo_context=repo_context,
        seed=seed,
    )
    print_result(run_quickstart(source=source, out=out, settings=settings))


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    import warnings

    from codetune.progress import quiet_library_bars

    logging.basicConfig(
        level=os.environ.get("CODETUNE_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s"
    )
    quiet_library_bars()
    # peft reads transformers' deprecated `is_gradient_checkpointing` on every adapter it wraps or
    # loads: a warning about two libraries' versions, nothing a user can or needs to change.
    warnings.filterwarnings(
        "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )
    try:
        app()
    except CodetuneError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except (OSError, UnicodeDecodeError) as error:  # a path or file the user gave: not a bug to trace
        if os.environ.get("CODETUNE_DEBUG"):
            raise
        if isinstance(error, UnicodeDecodeError):
            message = f"a file given is not UTF-8 text ({error})"
        else:
            message = (
                f"{error.filename}: {error.strerror}" if error.filename and error.strerror else str(error)
            )
        console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as error:
        if os.environ.get("CODETUNE_DEBUG"):
            raise
        console.print(
            f"[bold red]error:[/] {type(error).__name__}: {error} (set CODETUNE_DEBUG=1 for a traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
