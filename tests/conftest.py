"""Shared fixtures: a CLI runner that reports exit code and output, and torch kept to two threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.cli import free_port, run_cli
from tests.helpers.threads import threads_per_worker

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Ray Data logs at DEBUG to loggers that pytest (9.2 on) captures too, and its usage statistics ask a
# Prometheus nobody runs here, logging a traceback each time: a failure's report drowned in them.
os.environ.setdefault("RAY_DATA_LOG_LEVEL", "INFO")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The thread counts below (and tests/train's) stay as set: codetune's own choice from the machine's
# load (codetune.threads) could change it between two paths a test compares. tests/test_threads.py
# sets CODETUNE_THREADS itself.
os.environ.setdefault("CODETUNE_THREADS", "torch")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, the controller builds the tiny presets' tokenizers and weights once before
    any worker starts: two workers building the same cache folder would replace it under each other."""
    if getattr(config, "workerinput", None) is not None or not getattr(config.option, "numprocesses", None):
        return
    from codetune.modeling.presets import PRESETS, preset_dir

    for name in PRESETS:
        preset_dir(name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` a module's tests stay on one worker (its module fixtures are made
    once), and every test that needs the Ray head shares one worker (one cluster, not one each)."""
    for item in items:
        group = "ray" if "ray_head" in getattr(item, "fixturenames", ()) else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(threads_per_worker())


@pytest.fixture(autouse=True, scope="session")
def _gguf_conversions_in_a_session_cache(tmp_path_factory):
    """GGUF files the tests export are converted into a cache of this session's: each run's exports
    differ, and kept in the user's cache they filled it by about a gigabyte a run. The presets and
    tokenizers stay shared with the user's cache (built once, not once per run)."""
    from codetune.modeling.presets import PRESETS_VERSION, cache_dir

    shared = cache_dir()
    session = tmp_path_factory.mktemp("codetune-cache")
    for name in (f"presets-v{PRESETS_VERSION}", "tokenizers", "quickstart"):
        (shared / name).mkdir(parents=True, exist_ok=True)
        (session / name).symlink_to(shared / name, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CODETUNE_CACHE", str(session))
        yield


@pytest.fixture(autouse=True)
def _restore_language_registry():
    """Languages a test registers (as a recipe would) must not leak into the next test."""
    from codetune import languages

    saved = dict(languages._REGISTRY)
    yield
    languages._REGISTRY.clear()
    languages._REGISTRY.update(saved)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def ray_head():
    """The address of a small Ray head (2 CPUs, 100 MB object store) started for these tests only.

    `ray start --head --block` in the foreground, so stopping it stops exactly this cluster (never
    `ray stop`, which stops every Ray cluster on the machine).
    """
    pytest.importorskip("ray.data")
    import shutil
    import signal
    import tempfile
    import time

    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    port = free_port()
    ports = {
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    log = open(os.path.join(temp, "start.log"), "wb")  # noqa: SIM115  (a file, not a pipe nobody reads; open while the head runs)
    env = {**os.environ, "RAY_agent_register_timeout_ms": "300000", "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
         "--num-cpus=2", f"--object-store-memory={100 * 1024 * 1024}", "--include-dashboard=false",
         f"--temp-dir={temp}", "--disable-usage-stats",
         *(f"{flag}={value}" for flag, value in ports.items())],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.setdefault("RAY_agent_register_timeout_ms", "300000")
    import socket

    deadline = time.monotonic() + 240
    while True:  # the GCS port answers once the head is up
        if head.poll() is not None:
            pytest.fail(f"ray start failed: {Path(temp, 'start.log').read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail("ray start --head did not open its port in 240 s")
            time.sleep(1)
    import ray

    ray.init(address=address, include_dashboard=False, log_to_driver=False)  # waits for the node
    ray.shutdown()
    yield address
    # SIGINT, as Ctrl-C would: `ray start --block` stops its processes at once (SIGTERM took 33 s),
    # sent to the head's own process group: only this cluster
    os.killpg(head.pid, signal.SIGINT)
    try:
        head.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """One tokenizer per registered FIM family (tests/helpers/fim.py)."""
    from tests.helpers.fim import family_tokenizers

    return family_tokenizers(tmp_path_factory)
