"""Serving: codetune's batching server vs a naive server calling model.generate per request.

Run: python bench/serve.py [--requests 32] [--max-tokens 16] [--model tiny-gpt-bigcode]

Both servers run as subprocesses on 127.0.0.1 with the same tiny model and 2 threads. The naive one
is what the CodeGen use case wrote: a route that calls ``model.generate`` for each request, one at a
time. Both get the same completion requests (greedy) from 1 and then 8 concurrent keep-alive clients,
in alternating rounds; the figures are medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def naive_app(model_name: str):
    """A FastAPI app that runs model.generate per request under a lock."""
    import threading

    import torch
    from fastapi import FastAPI

    from codetune.modeling.loading import load_model, load_tokenizer

    model, tokenizer = load_model(model_name), load_tokenizer(model_name)
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/v1/completions")
    def completions(body: dict) -> dict:
        ids = tokenizer(body["prompt"], return_tensors="pt")
        with lock, torch.inference_mode():
            out = model.generate(
                **ids,
                max_new_tokens=body.get("max_tokens", 16),
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        return {"choices": [{"text": text, "index": 0, "finish_reason": "length"}]}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], port: int) -> subprocess.Popen:
    import httpx

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
    raise RuntimeError(f"server did not start: {' '.join(command)}")


def drive(port: int, prompts: list[str], clients: int, max_tokens: int) -> dict:
    import httpx

    # One keep-alive client per thread, made before the clock starts: a fresh httpx client per request
    # costs tens of ms of the same 2 CPU cores (SSL context, pool), which would throttle both servers.
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=300)
        return local.client

    def one(prompt: str) -> float:
        begin = time.perf_counter()
        response = client().post(
            f"http://127.0.0.1:{port}/v1/completions",
            json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
        )
        response.raise_for_status()
        return time.perf_counter() - begin

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, prompts[:clients]))  # warm-up: model, connections
        begin = time.perf_counter()
        latencies = sorted(pool.map(one, prompts))
    elapsed = time.perf_counter() - begin
    return {
        "rate": len(prompts) / elapsed,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
    }


def server_command(name: str, port: int) -> list[str]:
    if name == "naive":
        return [sys.executable, __file__, "--naive-server", str(port), "--model", ARGS.model]
    return [
        sys.executable,
        "-m",
        "codetune",
        "serve",
        "--model",
        ARGS.model,
        "--port",
        str(port),
        "--set",
        "device=cpu",
        "--set",
        "log_level=warning",
        "--set",
        "max_batch_size=16",
    ]


def main() -> None:
    import httpx

    prompts = [
        f"def function_{i}(values):\n    total = 0\n    for v in values:\n" for i in range(ARGS.requests)
    ]
    ports = {name: free_port() for name in ("naive", "codetune")}
    processes = {}
    try:
        for name, port in ports.items():
            processes[name] = start(server_command(name, port), port)
        # Both servers stay up and the rounds alternate, so that load from other work on the machine
        # falls on both alike; each figure is the median over the rounds.
        runs: dict[str, dict[int, list[dict]]] = {name: {1: [], 8: []} for name in ports}
        occupancy_by_clients: dict[int, list[float]] = {1: [], 8: []}

        def health() -> dict:
            return httpx.get(f"http://127.0.0.1:{ports['codetune']}/health", timeout=10).json()

        for _ in range(ARGS.rounds):
            for clients in (1, 8):
                for name, port in ports.items():
                    before = health() if name == "codetune" else None
                    runs[name][clients].append(drive(port, prompts, clients, ARGS.max_tokens))
                    if before is not None:
                        after = health()
                        steps = after["decode_steps"] - before["decode_steps"]
                        rows = after["decode_rows"] - before["decode_rows"]
                        occupancy_by_clients[clients].append(rows / max(steps, 1))
        stats = health()
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(timeout=30)
    occupancy = stats.get("decode_rows", 0) / max(stats.get("decode_steps", 0), 1)
    print(
        f"codetune batcher: {stats['sequences']} sequences in {stats['batches']} forward passes, "
        f"{occupancy:.1f} rows per decode step on average, "
        f"{stats.get('fused_joins', 0)} joining rows prefilled inside a decode step"
    )
    for clients, values in occupancy_by_clients.items():
        print(
            f"rows per decode step at {clients} client(s): {statistics.median(values):.2f} (median of {len(values)})"
        )
    results = {
        name: {
            c: {k: statistics.median(r[k] for r in rs) for k in ("rate", "p50", "p95")}
            for c, rs in by.items()
        }
        for name, by in runs.items()
    }
    for clients in (1, 8):
        for name in ("naive", "codetune"):
            r = results[name][clients]
            print(
                f"{name:9s} {clients} client(s): {r['rate']:7.2f} completions/s  p50 {r['p50'] * 1000:7.1f} ms  "
                f"p95 {r['p95'] * 1000:7.1f} ms  (median of {ARGS.rounds})"
            )
    one = results["codetune"][1]["p50"] / results["naive"][1]["p50"]
    print(json.dumps({k: {str(c): v for c, v in d.items()} for k, d in results.items()}))
    print(f"p50 at 1 client: codetune/naive = {one:.2f}")
    ratio = results["codetune"][8]["rate"] / results["naive"][8]["rate"]
    print(
        f"ratio: {ratio:.2f}x completions/s at 8 concurrent clients, codetune serve vs naive per-request model.generate"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-gpt-bigcode")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each server")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds")
    parser.add_argument("--naive-server", type=int, default=None, help=argparse.SUPPRESS)
    ARGS = parser.parse_args()
    if ARGS.naive_server is not None:
        import torch
        import uvicorn

        torch.set_num_threads(ARGS.threads)
        uvicorn.run(naive_app(ARGS.model), host="127.0.0.1", port=ARGS.naive_server, log_level="warning")
    else:
        main()
