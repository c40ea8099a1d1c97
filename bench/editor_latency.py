"""Keystroke latency: an editor typing through a real file, with the prefix KV cache on and off, or
(--compare engines) a GGUF file served by transformers and by llama.cpp.

Run: python bench/editor_latency.py [--keystrokes 40] [--prompt-tokens 900] [--model tiny-gpt-bigcode]
     [--cancellation]  (also the older burst/cancel comparison, printed before the last line)
     python bench/editor_latency.py --compare engines --model FILE.gguf [--threads 2]

With --compare engines the two servers run the same GGUF: `--engine hf` (transformers, the weights
dequantized to float32, prefix cache on) and `--engine llamacpp` (the file as it is, its cache reused
across keystrokes). Their arithmetic differs (quantized matmuls), so the share of keystrokes whose
answers agree is printed instead of requiring every one to be identical.

Two `codetune serve` subprocesses on 127.0.0.1 over the same tiny model: one as configured by default
(prefix cache on), one with `--set prefix_cache=false`. One client types through a real file (this
repository's serving code): on every keystroke it sends llama.vim's /infill body (the prefix up to the
cursor, ~900 tokens, and the next 200 characters as the suffix) and waits for the answer before the
next keystroke. The keystrokes alternate between the two servers, so that load from other work on
the machine falls on both alike. Every keystroke must get the same (greedy) text from both. Reports
p50/p95 of the keystroke latency; the last line is the p50 ratio.

With --cancellation it also replays llama.vim's bursts (keystrokes faster than answers) against the
cached server, with and without the one `id_slot` that lets a newer request cancel the older one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "codetune" / "serve" / "service.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, *settings: str) -> subprocess.Popen:
    import httpx

    command = [
        sys.executable, "-m", "codetune", "serve", "--model", ARGS.model, "--port", str(port),
        "--set", "device=cpu", "--set", "log_level=warning",
    ]  # fmt: skip
    for setting in settings:
        command += ["--set", setting]
    env = {**os.environ, "OMP_NUM_THREADS": str(ARGS.threads)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("codetune serve did not start")


def keystrokes(tokens: int) -> list[tuple[str, str]]:
    """(prefix, suffix) per keystroke: the cursor starts after ~`tokens` tokens and types on."""
    from codetune.modeling.loading import load_tokenizer

    text = SOURCE.read_text()
    tokenizer = load_tokenizer(ARGS.model)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    cursor = len(tokenizer.decode(ids[:tokens]))
    # The suffix is short (the rest of the function), as editors send a window after the cursor.
    return [(text[: cursor + i], text[cursor + i : cursor + i + 200]) for i in range(ARGS.keystrokes)]


def body(prefix: str, suffix: str, slot: int) -> dict:
    cut = prefix.rfind("\n") + 1
    return {
        "id_slot": slot,
        "input_prefix": prefix[:cut],
        "input_suffix": suffix,
        "input_extra": [],
        "prompt": prefix[cut:],
        "n_predict": ARGS.max_tokens,
        "top_k": 1,
        "samplers": ["top_k"],
        "stream": False,
        "cache_prompt": True,
        "response_fields": ["content", "tokens_cached", "tokens_evaluated"],
    }


def typing(urls: dict[str, str], strokes: list[tuple[str, str]]) -> dict[str, list[dict]]:
    """One client types; each keystroke goes to every server in turn (the order alternates)."""
    import httpx

    results: dict[str, list[dict]] = {name: [] for name in urls}
    with httpx.Client(timeout=600) as client:
        for url in urls.values():  # warm-up on a different part of the file
            client.post(f"{url}/infill", json=body("import os\n", "", 0)).raise_for_status()
        for i, stroke in enumerate(strokes):
            order = list(urls) if i % 2 == 0 else list(urls)[::-1]
            for name in order:
                begin = time.perf_counter()
                response = client.post(f"{urls[name]}/infill", json=body(*stroke, 0))
                response.raise_for_status()
                results[name].append({**response.json(), "wait": time.perf_counter() - begin})
    return results


async def bursts(url: str, strokes: list[tuple[str, str]], same_slot: bool) -> tuple[list[float], list[str]]:
    """Type in bursts; returns the wait for each burst's last answer, and that answer."""
    import httpx

    waits, answers = [], []
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as client:

        async def one(i: int) -> tuple[float, str]:
            begin = time.perf_counter()
            response = await client.post(f"{url}/infill", json=body(*strokes[i], 0 if same_slot else i))
            response.raise_for_status()
            return time.perf_counter() - begin, response.json()["content"]

        for start in range(0, len(strokes), ARGS.burst):
            tasks = []
            for i in range(start, min(start + ARGS.burst, len(strokes))):
                tasks.append(asyncio.create_task(one(i)))
                await asyncio.sleep(ARGS.interval_ms / 1000)
            results = await asyncio.gather(*tasks)
            waits.append(results[-1][0])
            answers.append(results[-1][1])
            await asyncio.sleep(0.2)  # the user pauses between bursts
    return waits, answers


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def main() -> None:
    strokes = keystrokes(ARGS.prompt_tokens)
    engines = ARGS.compare == "engines"
    settings = (
        {"hf": ["engine=hf"], "llamacpp": ["engine=llamacpp", f"threads={ARGS.threads}"]}
        if engines
        else {"cache off": ["prefix_cache=false"], "cache on": []}
    )
    baseline_name, measured = list(settings)
    ports = {name: free_port() for name in settings}
    servers = {}
    try:
        for server_name, server_settings in settings.items():
            servers[server_name] = start_server(ports[server_name], *server_settings)
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        results = typing(urls, strokes)
        cancel = None
        if ARGS.cancellation:
            baseline, base_answers = asyncio.run(bursts(urls[measured], strokes, same_slot=False))
            cancelled, answers = asyncio.run(bursts(urls[measured], strokes, same_slot=True))
            if answers != base_answers:
                raise SystemExit("error: the last keystroke of a burst got different text with cancellation")
            cancel = (baseline, cancelled)
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(30)
    off, on = results[baseline_name], results[measured]
    differ = [i for i, (a, b) in enumerate(zip(off, on)) if a["content"] != b["content"]]
    if differ and not engines:
        raise SystemExit(f"error: keystrokes {differ} got different text with the prefix cache")
    agree = (
        f"{len(strokes) - len(differ)} of {len(strokes)} answers identical"
        if engines
        else "answers identical"
    )
    prompt = statistics.median(r["tokens_evaluated"] for r in on)
    reused = statistics.median(r["tokens_cached"] for r in on[1:])
    print(
        f"{len(strokes)} keystrokes, one client, prompts of ~{prompt:.0f} tokens "
        f"(median {reused:.0f} reused from the cache), {ARGS.max_tokens} new tokens each; {agree}"
    )
    waits = {name: [r["wait"] for r in rs] for name, rs in results.items()}
    for name, values in waits.items():
        print(f"{name:10s} p50 {statistics.median(values) * 1000:7.1f} ms   p95 {p95(values) * 1000:7.1f} ms")
    if cancel is not None:
        baseline, cancelled = cancel
        print(
            f"bursts of {ARGS.burst}: last answer p50 {statistics.median(baseline) * 1000:.1f} ms without "
            f"cancel, {statistics.median(cancelled) * 1000:.1f} ms with cancel "
            f"({statistics.median(baseline) / statistics.median(cancelled):.2f}x)"
        )
    ratio = statistics.median(waits[baseline_name]) / statistics.median(waits[measured])
    compared = "transformers vs llama.cpp on the same GGUF" if engines else "prefix cache off vs on"
    print(f"ratio: {ratio:.2f}x p50 keystroke latency, {compared}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-gpt-bigcode")
    parser.add_argument("--compare", choices=["cache", "engines"], default="cache")
    parser.add_argument("--keystrokes", type=int, default=40)
    parser.add_argument("--prompt-tokens", type=int, default=900)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cancellation", action="store_true", help="also the burst/cancel comparison")
    parser.add_argument("--burst", type=int, default=5)
    parser.add_argument("--interval-ms", type=float, default=40)
    ARGS = parser.parse_args()
    main()
