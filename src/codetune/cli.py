"""The command line: parse arguments, call a stage, print a summary. No stage logic lives here."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from codetune.errors import CodetuneError, ConfigError, InputError
from codetune.languages import language_names
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

console = Console(stderr=True)
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any config field: KEY=VALUE (value read as YAML). Repeatable."),
]

ExecutorOption = Annotated[
    str | None, typer.Option("--executor", help="local (default) or ray (a Ray cluster, see --address).")
]
AddressOption = Annotated[
    str | None, typer.Option("--address", help="Ray cluster address (default: start a local one).")
]


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
        table = Table(title=title, show_header=False, title_justify="left")
        for key, value in item.summary.items():
            table.add_row(str(key), f"{value:.4g}" if isinstance(value, float) else str(value))
        console.print(table)


@app.command()
def collect(
    sources: Annotated[
        list[str],
        typer.Argument(help="Local folders, git URLs or paths, archives, github:QUERY, docs:URL."),
    ],
    language: Annotated[
        str,
        typer.Option(
            "--language",
            "-l",
            help=f"One of: {', '.join(language_names())}; or a language a recipe adds under `languages:` "
            "(extensions and a grammar, no code).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Corpus folder to write.")],
    rejected: Annotated[
        Path | None, typer.Option("--rejected", help="Write dropped files here, one folder per reason.")
    ] = None,
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Glob files must match. Repeatable.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Glob of files to skip. Repeatable.")
    ] = None,
    branch: Annotated[str | None, typer.Option("--branch", help="Git branch or tag to clone.")] = None,
    max_repos: Annotated[
        int | None, typer.Option("--max-repos", help="At most this many GitHub repos.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", help="Worker processes (default 2).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rewrite even when nothing changed.")] = False,
    executor: ExecutorOption = None,
    address: AddressOption = None,
    overrides: SetOption = None,
) -> None:
    """Gather and clean source files into a corpus (Parquet + manifest.json)."""
    given = {
        "sources": sources,
        "language": language,
        "out": out,
        "rejected": rejected,
        "include": include,
        "exclude": exclude,
        "branch": branch,
        "max_repos": max_repos,
        "workers": workers,
        "force": force or None,
        "executor": executor,
        "address": address,
    }
    print_result(_run_stage("collect", given, overrides))


@app.command()
def build(
    corpus: Annotated[
        Path,
        typer.Argument(
            help="Corpus folder written by `codetune collect`; for instruct, seq2seq and code_json also "
            "a JSON/JSONL file or folder (doccano exports and CoNaLa files included)."
        ),
    ],
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="files, windows, units, instruct, seq2seq or code_json."),
    ] = "files",
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model or tokenizer (hub id, path, preset).")
    ] = ("tiny-gpt-bigcode"),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Dataset folder to write.")] = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", help="Maximum tokens per example (default 512).")
    ] = None,
    fim_rate: Annotated[
        float | None, typer.Option("--fim-rate", help="Share of text examples made FIM (default 0.5).")
    ] = None,
    fim_spm_rate: Annotated[
        float | None, typer.Option("--fim-spm-rate", help="Share of FIM examples in SPM order (default 0.5).")
    ] = None,
    split_by: Annotated[str | None, typer.Option("--split-by", help="auto (default), repo or file.")] = None,
    repo_context: Annotated[
        bool,
        typer.Option(
            "--repo-context",
            help="Give examples context from other train files of their repository, laid out as serve "
            "lays it out (repo_context_budget tokens, see --set repo_context_options.*).",
        ),
    ] = False,
    overrides: SetOption = None,
) -> None:
    """Turn a corpus into a tokenized dataset with leak-free splits."""
    given = {
        "corpus": corpus,
        "format": format,
        "model": model,
        "out": out or Path("dataset"),
        "max_length": max_length,
        "fim_rate": fim_rate,
        "fim_spm_rate": fim_spm_rate,
        "split_by": split_by,
        "repo_context": repo_context or None,
    }
    print_result(_run_stage("build", given, overrides))


DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Plan the run without weights or network: parameters, memory per method, tokens per step.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="With --dry-run: print the plan as JSON.")]


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


@app.command()
def train(
    model: Annotated[str, typer.Option("--model", "-m", help="Hub id, local path or tiny preset.")],
    dataset: Annotated[
        Path | None, typer.Option("--dataset", "-d", help="Dataset folder from `codetune build`.")
    ] = None,
    method: Annotated[str, typer.Option("--method", help="lora, adalora, qlora or full.")] = "lora",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder to write.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")
    ] = False,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps.")] = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
    overrides: SetOption = None,
) -> None:
    """Fine-tune a model (LoRA, AdaLoRA, QLoRA or full) on a dataset."""
    given = {
        "model": model,
        "dataset": dataset,
        "method": method,
        "out": out or Path("run"),
        "resume": resume,
        "max_steps": max_steps,
    }
    if dry_run:
        from codetune.train.dryrun import plan

        _print_plans({"train": plan(_stage_config("train", given, overrides))}, as_json)
        return
    if dataset is None:
        raise ConfigError("--dataset is required (only --dry-run plans a run without one)")
    print_result(_run_stage("train", given, overrides))


@app.command()
def merge(
    run: Annotated[Path, typer.Argument(help="Run folder written by `codetune train`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the merged model.")],
    overrides: SetOption = None,
) -> None:
    """Merge a run's adapter into its base model (plain Hugging Face format)."""
    print_result(_run_stage("merge", {"run": run, "out": out}, overrides))


@app.command("eval")
def eval_(
    model: Annotated[
        list[str], typer.Option("--model", "-m", help="Model, run folder or NAME=PATH; repeat.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder to write.")],
    dataset: Annotated[
        Path | None, typer.Option("--dataset", "-d", help="Dataset folder from `codetune build`.")
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            help="completion, fim, loss, prompts, benchmark, execution; repeat (default: completion + loss).",
        ),
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help='Prompt file ([{"prompt": ...}] or JSONL).')
    ] = None,
    benchmark: Annotated[
        Path | None, typer.Option("--benchmark", help="CodeXGLUE method/line JSONL file.")
    ] = None,
    problems: Annotated[
        Path | None, typer.Option("--problems", help="HumanEval/MultiPL-E JSONL for pass@k.")
    ] = None,
    language: Annotated[
        str | None, typer.Option("--language", "-l", help="Language for syntax checks.")
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="Generations per prompt.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="0 = greedy.")] = None,
    top_p: Annotated[float | None, typer.Option("--top-p")] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens")] = None,
    samples: Annotated[int | None, typer.Option("--samples", help="Prompts per task.")] = None,
    sweep_temperature: Annotated[
        list[float] | None, typer.Option("--sweep-temperature", help="Repeat.")
    ] = None,
    sweep_top_p: Annotated[list[float] | None, typer.Option("--sweep-top-p", help="Repeat.")] = None,
    allow_execution: Annotated[
        bool, typer.Option("--allow-execution", help="Run generated code (sandboxed).")
    ] = False,
    unsafe_network: Annotated[
        bool, typer.Option("--unsafe-network", help="Run code even without a network namespace.")
    ] = False,
    unsafe_mount: Annotated[
        bool, typer.Option("--unsafe-mount", help="Run code even where the host filesystem shows.")
    ] = False,
    unsafe_pid: Annotated[
        bool, typer.Option("--unsafe-pid", help="Run code even without a pid namespace.")
    ] = False,
    overrides: SetOption = None,
) -> None:
    """Evaluate models side by side on held-out data; writes report.md/json and plots."""
    given = {
        "models": model,
        "dataset": dataset,
        "out": out,
        "tasks": task or None,
        "prompts": prompts,
        "benchmark": benchmark,
        "problems": problems,
        "language": language,
        "n": n,
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "samples": samples,
        "sweep_temperature": sweep_temperature or None,
        "sweep_top_p": sweep_top_p or None,
        "allow_execution": allow_execution or None,
        "unsafe_network": unsafe_network or None,
        "unsafe_mount": unsafe_mount or None,
        "unsafe_pid": unsafe_pid or None,
    }
    print_result(_run_stage("eval", given, overrides))


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
        str, typer.Option("--style", help="codexglue-method, codexglue-line or humaneval-infilling.")
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
    """Score predictions exactly as CodeXGLUE's evaluators or the HumanEval infilling harness do."""
    import json

    from codetune.evaluate.codexglue import STYLES

    if style not in (*STYLES, "humaneval-infilling"):
        raise InputError(
            f"unknown --style {style!r}; choose one of: {', '.join(STYLES)}, humaneval-infilling"
        )
    if style == "humaneval-infilling":
        from codetune.evaluate.infilling import score_files as score_infilling

        scores = score_infilling(
            predictions, problems, allow_execution=allow_execution, unsafe_network=unsafe_network
        )
    else:
        from codetune.evaluate.score import score_files

        if references is None:
            raise InputError(f"--style {style} needs --references")
        scores = score_files(references, predictions, style=style)
    if as_json:
        typer.echo(json.dumps(scores))
        return
    table = Table(title=f"score ({style})", show_header=False, title_justify="left")
    for key, value in scores.items():
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    Console().print(table)


@app.command()
def generate(
    model: Annotated[str, typer.Option("--model", "-m", help="Hub id, local path, preset or merged model.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="JSONL of prompts ({'prompt': ...}).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file of results (resumed if present).")],
    adapter: Annotated[
        Path | None, typer.Option("--adapter", help="Run folder whose adapter to apply.")
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", help="Tokens per completion.")
    ] = None,
    prompt_field: Annotated[
        str | None, typer.Option("--prompt-field", help="Input field with the prompt (default: prompt).")
    ] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="hf (default) or vllm.")] = None,
    executor: ExecutorOption = None,
    address: AddressOption = None,
    engines: Annotated[
        int | None,
        typer.Option(
            "--engines", help="With --executor ray: engines to run (default: one per GPU, or 1).", min=1
        ),
    ] = None,
    overrides: SetOption = None,
) -> None:
    """Generate completions for a file of prompts, in length-sorted batches; resumable."""
    given = {
        "model": model,
        "adapter": adapter,
        "input": input,
        "out": out,
        "max_new_tokens": max_new_tokens,
        "prompt_field": prompt_field,
        "engine": engine,
    }
    if executor not in (None, "local", "ray"):
        raise ConfigError(f"--executor must be local or ray, not {executor!r}")
    if executor == "ray":
        from codetune.inference.ray_executor import generate_file_ray

        print_result(generate_file_ray(_stage_config("generate", given, overrides), address, engines))
    else:
        print_result(_run_stage("generate", given, overrides))


@app.command()
def serve(
    model: Annotated[str, typer.Option("--model", "-m", help="Hub id, local path, preset or merged model.")],
    adapter: Annotated[
        list[str] | None,
        typer.Option(
            "--adapter",
            help="NAME=RUN_DIR: a LoRA run served over --model as model NAME. Repeatable. "
            "A lone RUN_DIR (no NAME=) applies that run's adapter to the one served model.",
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to bind.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="CODETUNE_API_KEY",
            show_envvar=True,
            help="Key clients must send; prefer the CODETUNE_API_KEY variable (an argument shows in ps).",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="Browser origin allowed to call the API (CORS). Repeatable."),
    ] = None,
    repo: Annotated[
        list[Path] | None,
        typer.Option(
            "--repo", help="Repository folder indexed for context (refreshed as files change). Repeatable."
        ),
    ] = None,
    overrides: SetOption = None,
) -> None:
    """Serve an OpenAI-compatible completions API (with FIM and Copilot routes)."""
    single, named = _adapter_options(adapter or [])
    given = {
        "model": model,
        "adapter": single,
        "adapters": named or None,
        "host": host,
        "port": port,
        "api_key": api_key,
        "cors_origins": cors_origin or None,
        "repos": [str(path) for path in repo] if repo else None,
    }
    _run_stage("serve", given, overrides)


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

    from codetune.errors import InputError
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
    adapt_steps: Annotated[int, typer.Option(min=1, help="LoRA steps on the project.")] = 160,
    samples: Annotated[int, typer.Option(min=1, help="Held-out completions evaluated.")] = 150,
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
    from codetune.quickstart import QuickstartSettings
    from codetune.quickstart import quickstart as run_quickstart

    if rebuild_base is not None:
        from codetune.quickstart.base import rebuild

        print_result([rebuild(rebuild_base, say=console.print)])
        return
    settings = QuickstartSettings(
        pretrain_steps=pretrain_steps, adapt_steps=adapt_steps, samples=samples, repo_context=repo_context
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
