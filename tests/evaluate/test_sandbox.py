"""pass@k against hand-computed values; the sandbox contains hostile programs and reports them as failures."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from codetune.evaluate.passk import execute, pass_at_k, read_problems, truncate_at_stop
from codetune.evaluate.sandbox import SandboxLimits, namespace_prefix, run_sandboxed


def test_pass_at_k_hand_values():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(4, 3, 2) == 1.0  # n - c < k
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


needs_ns = pytest.mark.skipif(namespace_prefix() is None, reason="namespaces not permitted here")
PY = [sys.executable, "{file}"]


def run(code: str, **limits) -> object:
    return run_sandboxed(PY, {"main.py": code}, limits=SandboxLimits(**limits))


def alive(marker: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if marker in line and "ps -eo" not in line]


@needs_ns
def test_sandbox_runs_good_code_in_a_fresh_dir():
    result = run("import os\nopen('x.txt', 'w').write('ok')\nprint(open('x.txt').read(), os.getcwd())")
    assert result.passed and result.stdout.startswith("ok ")
    assert "/codetune-sandbox-" in result.stdout
    assert not Path(result.stdout.split()[1]).exists()  # the temp dir is gone


@needs_ns
def test_infinite_loop_times_out():
    result = run("while True:\n    pass\n", wall_seconds=2, cpu_seconds=1)
    assert not result.passed and result.status in {"failed", "killed", "timeout"}
    assert result.seconds < 5


@needs_ns
def test_sleeping_forever_hits_wall_limit():
    marker = uuid.uuid4().hex
    result = run(f"import time  # {marker}\nwhile True:\n    time.sleep(1)\n", wall_seconds=1)
    assert result.status == "timeout" and not result.passed
    assert alive(marker) == []


@needs_ns
@pytest.mark.timeout(60)
def test_fork_bomb_is_contained():
    if (
        os.geteuid() == 0
        and not Path("/sys/fs/cgroup/pids").is_dir()
        and not Path("/sys/fs/cgroup/cgroup.controllers").is_file()
    ):
        pytest.skip("root without a pids cgroup: the process limit cannot be enforced safely")
    marker = uuid.uuid4().hex
    code = f"import os, time  # {marker}\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n"
    result = run(code, wall_seconds=3, max_processes=16)
    assert not result.passed
    assert alive(marker) == []  # every descendant died with the run
    assert run("print('host still forks')").passed
    # the process limit itself: at most max_processes (+ the few the wrapper needs) can exist at once
    counter = (
        "import os, time\nok = 0\nfor _ in range(60):\n    try:\n        if os.fork() == 0:\n"
        "            time.sleep(2)\n            os._exit(0)\n        ok += 1\n    except OSError:\n"
        "        break\nprint(ok)\n"
    )
    forked = int(run(counter, wall_seconds=5, max_processes=16).stdout.split()[0])
    assert 8 <= forked <= 20


@needs_ns
def test_memory_hog_fails():
    result = run("x = bytearray(4 * 1024**3)\nprint('allocated')", memory_mb=256)
    assert not result.passed and "allocated" not in result.stdout


@needs_ns
def test_write_outside_the_temp_dir_is_blocked(tmp_path):
    target = tmp_path / "escaped.txt"
    result = run(f"open({str(target)!r}, 'w').write('x')\n")
    assert not result.passed
    assert not target.exists()
    result = run("import subprocess\nsubprocess.run(['mount', '-o', 'remount,rw', '/'], check=True)\n")
    assert not result.passed


@needs_ns
def test_network_connection_fails():
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        result = run(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        )
        assert not result.passed and "connected" not in result.stdout
    finally:
        server.close()


@needs_ns
def test_output_is_capped():
    result = run("print('x' * 10**6)", output_bytes=1000)
    assert len(result.stdout) < 1100 and result.stdout.endswith("[output truncated]")


def test_refuses_without_network_isolation(monkeypatch):
    from codetune.errors import CodetuneError
    from codetune.evaluate import sandbox

    monkeypatch.setattr(sandbox, "namespace_prefix", lambda: None)
    with pytest.raises(CodetuneError, match="--unsafe-network"):
        sandbox.run_sandboxed(PY, {"main.py": "print(1)"})
    assert sandbox.run_sandboxed(PY, {"main.py": "print(1)"}, unsafe_network=True).passed


@needs_ns
def test_execute_humaneval_shaped(tmp_path):
    problems_file = tmp_path / "problems.jsonl"
    problems_file.write_text(
        '{"task_id": "add", "prompt": "def add(a, b):\\n", "test": "def check(f):\\n    assert f(1, 2) == 3\\n",'
        ' "entry_point": "add", "stop_tokens": ["\\ndef "]}\n',
        encoding="utf-8",
    )
    problems = read_problems(problems_file)
    samples = [["    return a + b\ndef junk(:", "    return a - b\n", "    while True: pass\n"]]
    report = execute(problems, samples, ks=(1, 2), limits=SandboxLimits(wall_seconds=2, cpu_seconds=1))
    assert report["rows"][0]["passed"] == 1
    assert report["pass@1"] == pytest.approx(1 / 3)
    assert report["pass@2"] == pytest.approx(1 - 1 / 3)  # 1 - C(2,2)/C(3,2)
    assert truncate_at_stop("a\ndef b", ["\ndef "]) == "a"
