"""Learning from accepts, measured: does an adapter trained on round 1's editor feedback get more of
its suggestions accepted in round 2?

Run: python bench/feedback_loop.py --repo /tmp/repos/click --repo /tmp/repos/requests --repo /tmp/repos/httpx
     [--base PATH | --pretrain-steps N] [--requests 700] [--method lora|kto|dpo] [--gate] [--cut] [--steps 200]
     [--work /tmp/feedback-loop] [--engine hf|llamacpp]

A simulated developer types a few lines at a seeded random place of each held-out Python file of real
repositories (editor replay: the code above is written, none below) through a real
`codetune serve --record` on 127.0.0.1, as Tabby's plugin talks to it: at each pause (after a word or a
punctuation mark, and after the indentation of a new line) it asks /v1/completions for a suggestion
(Tabby's body: the file up to the cursor, its path and language) and, when one is shown, accepts it
(a `select` event to /v1/events) when its first line begins what the developer is about to type on
that line, moving the cursor past it, or dismisses it (a `dismiss` event) and types the next word.

Round 1: the base model on half of each repository's files (shuffled, seeded). Its records become a
`build --format feedback` dataset (accepted suggestions, rejected ones, and the line the developer typed
where a suggestion was not taken) and a LoRA adapter (`--method lora`: the accepted and typed lines as
targets; `kto` or `dpo`: preference rows), which is rolled out into the same running server (POST
/admin/adapters). Round 2: the OTHER files of the same repositories. Also measured on the round-2 files:
the base alone, with --gate both behind `--min-confidence auto` fitted on round 1's records, and with
--cut both behind `--cut-below auto` (each suggestion answered up to its first token under the floor
that would have had the most of round 1's characters accepted). For each: suggestions shown,
accepted, acceptance rate, accepted characters.

Round 2 against round 1 is printed, but other files can be easier or harder: the last line compares the
tuned loop (the adapter, behind the cut under `--cut`, else the gate under `--gate`) against the base on
the SAME round-2 files.

The base (--base, default the quickstart's tiny base shipped with codetune, pretrained on the Python
standard library) knows Python but none of these repositories.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

SKIP_PARTS = {"tests", "test", "docs", "examples", "scripts", "benchmarks"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`codetune serve` in a subprocess."""

    def __init__(self, model: str, *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        engine = ["--engine", "llamacpp", "--threads", str(ARGS.threads)] if ARGS.engine == "llamacpp" else []
        command = [
            sys.executable, "-m", "codetune", "serve", "--model", model, "--port", str(self.port),
            "--device", "cpu", "--context-length", str(ARGS.context), "--log-level", "warning", *engine, *options,
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(ARGS.threads)}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"codetune serve failed: {self.process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("codetune serve did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@dataclass
class Tally:
    requests: int = 0
    shown: int = 0
    accepted: int = 0
    accepted_chars: int = 0
    typed_chars: int = 0

    @property
    def rate(self) -> float:
        return self.accepted / self.shown if self.shown else 0.0

    def line(self, name: str) -> str:
        return (
            f"{name:<34} requests {self.requests:5d}  shown {self.shown:5d}  accepted {self.accepted:4d}  "
            f"acceptance rate {100 * self.rate:5.1f}%  accepted chars {self.accepted_chars:6d} "
            f"({100 * self.accepted_chars / max(self.typed_chars, 1):.1f}% of {self.typed_chars} typed)"
        )


Window = tuple[str, str, int, int]  # relative path, text, where typing starts, where it stops


def word_end(text: str, at: int) -> int:
    """Where the word (or punctuation mark, or run of spaces) at ``at`` ends."""

    def kind(ch: str) -> int:
        return 0 if ch.isalnum() or ch == "_" else 1 if ch == " " else 2

    first = kind(text[at])
    end = at + 1
    if first == 2:
        return end
    while end < len(text) and text[end] != "\n" and kind(text[end]) == first:
        end += 1
    return end


def replay(url: str, files: list[Window], budget: int) -> Tally:
    """Type each file's window (the code above it already written, none below) until ``budget``
    suggestions were asked for."""
    from codetune.evaluate.metrics import accepts, first_line

    tally = Tally()
    client = httpx.Client(base_url=url, timeout=120, headers={"User-Agent": "feedback-loop-bench/1.0"})
    for path, full, start, stop in files:
        text, at = full[:stop], start
        while at < len(text) and tally.requests < budget:
            end = text.find("\n", at)
            end = len(text) if end < 0 else end
            if not text[at:end].strip():  # the line is done: Enter, and the editor indents the next
                nxt = end + 1
                while nxt < len(text) and text[nxt] in " \t":
                    nxt += 1
                tally.typed_chars += nxt - at
                at = nxt
                continue
            body = {"language": "python", "segments": {"prefix": text[:at], "filepath": path}}
            answer = client.post("/v1/completions", json=body).json()
            tally.requests += 1
            suggestion = answer["choices"][0]["text"]
            shown = suggestion.split("\n", 1)[0].rstrip()
            if first_line(suggestion):
                tally.shown += 1
                event = {"completion_id": answer["id"], "choice_index": 0}
                client.post("/v1/events", json={"type": "view", **event})
                if accepts(suggestion, text[at:end]):
                    partial = "\n" in suggestion.strip("\n")
                    query = "?select_kind=line" if partial else ""
                    extra = {"select_kind": "line"} if partial else {}
                    client.post("/v1/events" + query, json={"type": "select", **event, **extra})
                    tally.accepted += 1
                    tally.accepted_chars += len(shown)
                    tally.typed_chars += len(shown)
                    at += len(shown)
                    continue
                client.post("/v1/events", json={"type": "dismiss", **event})
            step = word_end(text, at)
            tally.typed_chars += step - at
            at = step
        if tally.requests >= budget:
            break
    return tally


def typing_window(text: str, rng: random.Random, lines: int) -> tuple[int, int]:
    """``lines`` lines of ``text`` from a seeded random code line, the first fifth of the file (its
    imports and licence) left out where the file is long enough."""
    code, offset = [], 0
    for line in text.split("\n"):
        if line.strip():
            code.append(offset)
        offset += len(line) + 1
    last = max(len(code) - lines, 0)
    first = min(len(code) // 5, last)
    index = rng.randint(first, last)
    start = code[index]
    start += len(text[start:]) - len(text[start:].lstrip(" \t"))
    after = code[index + lines] if index + lines < len(code) else len(text)
    return start, after


def split_files(repos: list[Path], seed: int) -> tuple[list[Window], list[Window]]:
    """Each repository's source files (no tests or docs), shuffled; half for each round, interleaved
    across repositories so that each round sees every repository. In each file the developer types
    ``--lines-per-file`` lines from a seeded random place: a round then spans many files (a round that
    typed files from their top spent its requests on one file's imports)."""
    rounds: tuple[list, list] = ([], [])
    rng = random.Random(seed)
    per_repo = []
    for repo in repos:
        files = sorted(
            p
            for p in repo.rglob("*.py")
            if not SKIP_PARTS & set(p.relative_to(repo).parts) and 2_000 < p.stat().st_size < 200_000
        )
        rng.shuffle(files)
        half = len(files) // 2
        windows = []
        for part in (files[:half], files[half:]):
            texts = [
                (f"{repo.name}/{p.relative_to(repo)}", p.read_text(encoding="utf-8", errors="replace"))
                for p in part
            ]
            windows.append(
                [(path, text, *typing_window(text, rng, ARGS.lines_per_file)) for path, text in texts]
            )
        per_repo.append(windows)
    for index in range(2):
        parts = [repo_files[index] for repo_files in per_repo]
        for position in range(max(len(p) for p in parts)):
            rounds[index].extend(p[position] for p in parts if position < len(p))
    return rounds


def base_model() -> str:
    if ARGS.base:
        return ARGS.base
    from codetune.quickstart import QuickstartSettings, pretrained_base

    model, _ = pretrained_base(QuickstartSettings(pretrain_steps=ARGS.pretrain_steps))
    return str(model)


def train_adapter(base: str, records: Path, work: Path) -> Path:
    from codetune.dataset.builder import build
    from codetune.dataset.config import BuildConfig
    from codetune.train.config import TrainConfig
    from codetune.train.recipe import train

    build(
        BuildConfig(
            corpus=records,
            format="feedback",
            model=base,
            out=work / "dataset",
            max_length=ARGS.context,
            valid_fraction=0.1,
            test_fraction=0.0,
            seed=0,
        )
    )
    stats = json.loads((work / "dataset" / "stats.json").read_text())
    counts = stats["objectives"]
    # KTO's paper (Ethayarajh et al. 2024) weighs the rarer kind up so that lambda_D n_D / (lambda_U n_U) is in
    # [1, 4/3]: developers reject most suggestions, and unweighted the adapter learns only "not that".
    desirable_weight = max(counts.get("kto_undesirable", 0), 1) / max(counts.get("kto_desirable", 0), 1)
    print(
        f"feedback dataset: {counts}; targets {stats['targets']}; kto desirable weight {desirable_weight:.1f}",
        flush=True,
    )
    train(
        TrainConfig(
            model=base,
            dataset=work / "dataset",
            method=ARGS.method,
            out=work / "run",
            max_steps=ARGS.steps,
            **(
                {"batch_tokens": ARGS.batch_tokens, "pack_length": ARGS.context}
                if ARGS.batch_tokens
                else {"batch_size": 8}
            ),
            lr=ARGS.lr or (3e-4 if ARGS.method == "lora" else 1e-3),
            lora_r=16,
            lora_alpha=32,
            preference_beta=ARGS.beta,
            kto_desirable_weight=max(desirable_weight, 1.0),
            precision=ARGS.precision,
            eval_every=max(ARGS.steps // 4, 1),
            save_every=ARGS.steps,
        )
    )
    return work / "run"


def as_gguf(model: str, out: Path) -> str:
    """``model`` (a base, or a run merged into its base) written as an f16 GGUF for llama.cpp, once.

    The base is exported too, not served from its own (quantized) file: both rounds then run f16
    weights, and only the adapter differs between them.
    """
    from codetune.export.config import ExportConfig
    from codetune.export.runner import export

    if not out.is_file():
        started = time.monotonic()
        export(ExportConfig(model=model, out=out, dtype="f16", check_prompts=0))
        print(f"exported {model} to {out} in {time.monotonic() - started:.0f} s", flush=True)
    return str(out)


def main() -> None:
    work = Path(ARGS.work)
    if work.exists() and not ARGS.resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    tallies = work / "tallies.json"
    done: dict[str, dict] = json.loads(tallies.read_text()) if ARGS.resume and tallies.is_file() else {}

    def measured(name: str, run) -> Tally:
        if name not in done:
            done[name] = vars(run())
            tallies.write_text(json.dumps(done, indent=1))
        return Tally(**done[name])

    repos = [Path(r).resolve() for r in ARGS.repo]
    round1, round2 = split_files(repos, ARGS.seed)
    print(
        f"repositories: {', '.join(r.name for r in repos)}; files: round 1 {len(round1)}, round 2 {len(round2)}"
    )
    base = base_model()
    print(f"base: {base}", flush=True)
    llama = ARGS.engine == "llamacpp"
    served_base = as_gguf(base, work / "base-f16.gguf") if llama else base
    results: dict[str, Tally] = {}
    records = work / "records"
    round1_records = work / "round1-records"
    run = work / "run"
    adapted = f"round 2: {ARGS.method} adapter"
    if adapted not in done:
        if "round 1: base" not in done:
            shutil.rmtree(records, ignore_errors=True)
            shutil.rmtree(round1_records, ignore_errors=True)
        swaps = [] if llama else ["--adapter-dir", str(work)]  # llama.cpp serves one file: no swap
        server = Server(served_base, "--record", str(records), *swaps)
        try:
            started = time.monotonic()
            results["round 1: base"] = measured(
                "round 1: base", lambda: replay(server.url, round1, ARGS.requests)
            )
            print(
                results["round 1: base"].line("round 1: base"),
                f"[{time.monotonic() - started:.0f} s]",
                flush=True,
            )
            if not round1_records.exists():
                shutil.copytree(records, round1_records)
            started = time.monotonic()
            run = train_adapter(base, round1_records, work)
            print(f"{ARGS.method} adapter trained in {time.monotonic() - started:.0f} s", flush=True)
            if llama:
                server.stop()
                server = Server(as_gguf(str(run), work / "adapter-f16.gguf"))
            else:
                swapped = httpx.post(
                    server.url + "/admin/adapters", json={"name": base, "path": str(run)}, timeout=300
                )
                swapped.raise_for_status()
            results[adapted] = measured(adapted, lambda: replay(server.url, round2, ARGS.requests))
        finally:
            server.stop()
    results["round 1: base"] = Tally(**done["round 1: base"])
    results[adapted] = Tally(**done[adapted])
    print(results[adapted].line(adapted), flush=True)
    # Controls on the round-2 files: the base alone, and each with the gate fitted on round 1.
    tuned_model = as_gguf(str(run), work / "adapter-f16.gguf") if llama else str(run)
    controls: list[tuple[str, str, str | None]] = [("round 2 files: base", served_base, None)]
    for kind in [k for k, on in (("gate", ARGS.gate), ("cut", ARGS.cut)) if on]:
        controls += [
            (f"round 2 files: base + {kind}", served_base, kind),
            (f"{adapted} + {kind}", tuned_model, kind),
        ]
    for control, (name, model, kind) in enumerate(controls):
        if name in done:
            results[name] = Tally(**done[name])
            continue
        options: list[str] = []
        if kind is not None:  # fitted on round 1's records (a copy: this server records into it too)
            folder = work / f"{kind}-{control}"
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(round1_records, folder)
            option = "--min-confidence" if kind == "gate" else "--cut-below"
            options = ["--record", str(folder), option, "auto"]
        try:
            server = Server(model, *options)
        except RuntimeError as error:  # e.g. a gate that round 1's records cannot fit
            print(f"{name}: not measured: {str(error).strip().splitlines()[-1]}", flush=True)
            continue
        try:
            stats = httpx.get(server.url + "/admin/records", timeout=30).json() if kind else {}
            if kind == "gate":
                gate = stats["min_confidence"]
                fitted = gate["fitted_on"]
                print(
                    f"gate: threshold {gate['threshold']:.3f}; on round 1 it removes {fitted['removed']} of "
                    f"{fitted['suggestions']} suggestions, {fitted['accepted_lost']} of them accepted",
                    flush=True,
                )
            elif kind == "cut":
                cut = stats["cut_below"]
                before, after = cut["fitted_on"]["before"], cut["fitted_on"]["after"]
                print(
                    f"cut: floor {cut['floor']}; on round 1's {cut['fitted_on']['judged']} suggestions with a known "
                    f"truth: accepted {before['accepted']} -> {after['accepted']} of {before['shown']} -> "
                    f"{after['shown']} shown, accepted chars {before['accepted_chars']} -> {after['accepted_chars']}",
                    flush=True,
                )
            results[name] = measured(name, lambda url=server.url: replay(url, round2, ARGS.requests))
            print(results[name].line(name), flush=True)
        finally:
            server.stop()

    print()
    for name, tally in results.items():
        print(tally.line(name))
    first, second = results["round 1: base"], results[f"round 2: {ARGS.method} adapter"]
    control = results["round 2 files: base"]
    print(
        f"round 2 vs round 1 (other files, easier or harder): {second.rate / max(first.rate, 1e-9):.2f}x acceptance "
        f"rate, {second.accepted_chars / max(first.accepted_chars, 1):.2f}x accepted chars "
        f"({second.accepted_chars} vs {first.accepted_chars})"
    )
    # The headline's tuned loop: the adapter behind the cut, else the gate, when asked for.
    tuned_name = adapted + (" + cut" if ARGS.cut else " + gate" if ARGS.gate else "")
    compared = [name for name in results if name.startswith(("round 2: ", "round 2 files: base + "))]
    for name in dict.fromkeys([*compared, tuned_name]):
        tuned = results.get(name)
        if tuned is None:
            print(f"{name}: not measured")
            continue
        print(
            f"same round-2 files, {name.removeprefix('round 2: ').removeprefix('round 2 files: ')} vs base: "
            f"{tuned.rate / max(control.rate, 1e-9):.2f}x acceptance rate, "
            f"{tuned.accepted_chars / max(control.accepted_chars, 1):.2f}x accepted chars "
            f"({tuned.accepted_chars} vs {control.accepted_chars}), shown {tuned.shown} vs {control.shown}"
        )
    # The headline: the tuned loop against the base on the SAME round-2 files (easier files cannot make it).
    tuned = results.get(tuned_name, Tally())
    print(
        f"ratio: {tuned.rate / max(control.rate, 1e-9):.2f}x acceptance rate, round-2 files, "
        f"{tuned_name.removeprefix('round 2: ')} vs base ({tuned.accepted_chars / max(control.accepted_chars, 1):.2f}x "
        "accepted chars)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", action="append", required=True, help="A repository folder (repeatable).")
    parser.add_argument("--base", help="Base model (default: the quickstart's pretrained tiny base).")
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        help="Pretrain the default base here for N steps (default: the shipped one).",
    )
    parser.add_argument("--requests", type=int, default=700, help="Suggestions asked for per round.")
    parser.add_argument(
        "--method",
        choices=["lora", "kto", "dpo"],
        default="lora",
        help="lora: the sft rows (accepted text, and the line typed where a suggestion was not taken); "
        "kto / dpo: preference rows.",
    )
    parser.add_argument(
        "--gate",
        action="store_true",
        help="The tuned loop also answers empty below the --min-confidence auto gate fitted on round 1 "
        "(two more rounds on the round-2 files: the base and the adapter, each behind the gate).",
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument(
        "--batch-tokens",
        type=int,
        help="Tokens per step, packed into rows of --context tokens (default: the train stage's own "
        "batching; a real base, e.g. Gemma 3 270M, wants 1024: attention over one long packed row is slow "
        "on a CPU).",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Keep --work and reuse what is done there (round 1's tally and records, the trained adapter).",
    )
    parser.add_argument(
        "--lr", type=float, help="Learning rate (default: 3e-4 for lora, 1e-3 for kto and dpo)."
    )
    parser.add_argument(
        "--cut",
        action="store_true",
        help="Also measure each model on the round-2 files behind `--cut-below auto` fitted on round 1's records.",
    )
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--context", type=int, default=256, help="Prompt + completion tokens (the base's).")
    parser.add_argument(
        "--lines-per-file",
        type=int,
        default=3,
        help="Lines the developer types in each file, from a seeded random place (about 8 requests a "
        "line): a round spans about --requests / (8 x this) files.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--engine",
        choices=["hf", "llamacpp"],
        default="hf",
        help="hf: every round through transformers, the adapter rolled out by POST /admin/adapters; "
        "llamacpp: the base and the merged adapter each exported to an f16 GGUF and served by llama.cpp "
        "(several times faster on a CPU, so a round can ask for far more suggestions).",
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="Training precision (bf16 speeds a real base, e.g. Gemma 3 270M, on CPUs with AVX-512 BF16).",
    )
    parser.add_argument("--work", default="/tmp/feedback-loop")
    ARGS = parser.parse_args()
    main()
