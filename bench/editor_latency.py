"""Keystroke latency: an editor typing through a real file, with and without cancelling older requests.

Run: python bench/editor_latency.py [--keystrokes 40] [--burst 5] [--interval-ms 40] [--model tiny-gpt-bigcode]

A `codetune serve` subprocess on 127.0.0.1 gets llama.vim's /infill body on every keystroke: the prefix
is ~900 tokens of a real file (this repository's serving code) up to the cursor, the suffix the rest.
Typing comes in bursts of `--burst` keystrokes `--interval-ms` apart, faster than one answer takes;
what the user waits for is the answer to the last keystroke of a burst. Two runs over the same
keystrokes:
- baseline: every request has its own slot, so older keystrokes keep generating beside the newest;
- codetune: every request carries llama.vim's one `id_slot`, so a newer request cancels the older one.
The last keystroke of each burst must get the same (greedy) text in both runs. Reports p50/p95 of the
wait for that last answer; the last line is the p50 ratio.
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

SOURCE = Path(__file__).resolve().parents[1] / "src" / "codetune" / "serve" / "serving.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    import httpx

    command = [
        sys.executable, "-m", "codetune", "serve", "--model", ARGS.model, "--port", str(port),
        "--set", "device=cpu", "--set", "log_level=warning",
    ]  # fmt: skip
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
        "response_fields": ["content"],
    }


async def run(url: str, strokes: list[tuple[str, str]], same_slot: bool) -> tuple[list[float], list[str]]:
    """Type in bursts; returns the wait for each burst's last answer, and that answer."""
    import httpx

    waits, answers = [], []
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as client:

        async def one(i: int) -> tuple[float, str]:
            begin = time.perf_counter()
            response = await client.post(f"{url}/infill", json=body(*strokes[i], 0 if same_slot else i))
            response.raise_for_status()
            return time.perf_counter() - begin, response.json()["content"]

        await one(0)  # warm-up
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
    port = free_port()
    server = start_server(port)
    try:
        url = f"http://127.0.0.1:{port}"
        baseline, base_answers = asyncio.run(run(url, strokes, same_slot=False))
        codetune, answers = asyncio.run(run(url, strokes, same_slot=True))
    finally:
        server.terminate()
        server.wait(30)
    if answers != base_answers:
        raise SystemExit("error: the last keystroke of a burst got different text with cancellation")
    print(f"{len(strokes)} keystrokes over ~{ARGS.prompt_tokens} prompt tokens, bursts of {ARGS.burst}")
    for name, waits in (("baseline (no cancel)", baseline), ("codetune (cancel)", codetune)):
        print(f"{name:22s} p50 {statistics.median(waits) * 1000:7.1f} ms   p95 {p95(waits) * 1000:7.1f} ms")
    ratio = statistics.median(baseline) / statistics.median(codetune)
    print(f"ratio: {ratio:.2f}x lower p50 wait for the last keystroke's answer with cancellation")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-gpt-bigcode")
    parser.add_argument("--keystrokes", type=int, default=40)
    parser.add_argument("--burst", type=int, default=5)
    parser.add_argument("--interval-ms", type=float, default=40)
    parser.add_argument("--prompt-tokens", type=int, default=900)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    ARGS = parser.parse_args()
    main()
