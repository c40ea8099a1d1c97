"""torch's thread count follows the cores the machine has free (codetune.threads), by default."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from codetune.threads import threads_for, usable_cores

SPIN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end:\n    pass\n"
PROBE = (
    "import torch\nfrom codetune.threads import follow_load\n"
    "first = follow_load()\nprint(first, torch.get_num_threads())\n"
)


def probe(env: dict[str, str]) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    assert done.returncode == 0, done.stderr
    chosen, torch_threads = done.stdout.split()
    return chosen, int(torch_threads)


@pytest.mark.parametrize(
    ("cores", "others", "threads"),
    [(2, 0.0, 2), (2, 0.3, 2), (2, 0.67, 1), (2, 1.0, 1), (2, 2.0, 1), (1, 0.9, 1), (8, 3.0, 5), (8, 2.4, 6)],
)
def test_threads_are_the_cores_other_processes_leave_free_at_least_one(cores, others, threads):
    assert threads_for(cores, others) == threads


@pytest.mark.skipif(usable_cores() < 2, reason="needs 2 cores to have one taken")
def test_with_every_core_busy_torch_gets_one_thread_not_one_per_core():
    neighbours = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(usable_cores())]
    try:
        time.sleep(0.5)  # they are running
        env = {"CODETUNE_THREADS": "auto", "OMP_NUM_THREADS": ""}
        assert probe(env) == ("1", 1)
    finally:
        for neighbour in neighbours:
            neighbour.kill()
            neighbour.wait()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CODETUNE_THREADS": "3", "OMP_NUM_THREADS": ""}, ("3", 3)),
        ({"CODETUNE_THREADS": "auto", "OMP_NUM_THREADS": "1"}, ("1", 1)),  # the user's OpenMP setting
    ],
)
def test_a_count_the_user_set_is_kept(env, expected):
    assert probe(env) == expected


def test_torch_mode_leaves_torchs_own_default():
    env = {**os.environ, "OMP_NUM_THREADS": ""}
    default = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    assert probe({"CODETUNE_THREADS": "torch", "OMP_NUM_THREADS": ""}) == ("None", int(default.stdout))
