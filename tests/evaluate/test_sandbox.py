"""pass@k against hand-computed values; the sandbox contains hostile programs, as root and as a user.

Hostile programs run through ``codetune sandbox run FILE --json`` (eval's limits) as root, and
through the same ``run_sandboxed`` as the unprivileged user ``nobody`` (with the system Python,
which nobody can execute). A test whose layer is missing here is skipped with the reason
``codetune sandbox check`` gives.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

from codetune.evaluate.config import EvalConfig
from codetune.evaluate.passk import execute, pass_at_k, read_problems, truncate_at_stop
from codetune.evaluate.sandbox import SandboxLimits, eval_limits, probe, run_sandboxed

SRC = str(Path(__file__).resolve().parents[2] / "src")
PY = [sys.executable, "{file}"]
EVAL = EvalConfig()
USER = "nobody"
USER_PYTHON = "/usr/bin/python3"
# Run by the user's interpreter: the same run_sandboxed eval uses, printing the result as JSON.
USER_DRIVER = """
import dataclasses, json, sys
from codetune.evaluate.sandbox import SandboxLimits, probe, run_sandboxed
if sys.argv[1] == "check":
    print(json.dumps({l.name: [l.active, l.detail] for l in probe().layers}))
else:
    path, limits = sys.argv[2], SandboxLimits(**json.loads(sys.argv[3]))
    code = open(path, encoding="utf-8").read()
    print(json.dumps(dataclasses.asdict(run_sandboxed([sys.executable, "{file}"], {"main.py": code}, limits=limits))))
"""


def test_pass_at_k_hand_values():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(4, 3, 2) == 1.0  # n - c < k
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def _skip_unless(layers: dict[str, tuple[bool, str]], *names: str) -> None:
    for name in names:
        active, detail = layers[name]
        if not active:
            pytest.skip(f"sandbox layer {name} unavailable: {detail}")


needs_ns = pytest.mark.skipif(
    bool(probe().missing()), reason="; ".join(probe().layer(n).detail for n in probe().missing())
)


def _world_dir() -> Path:
    """A temp dir any user can read (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="codetune-sandbox-test-"))
    path.chmod(0o755)
    return path


class Runner:
    """Runs a program in the sandbox as root (in this process) or as an unprivileged user."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        if mode == "root" and os.geteuid() != 0:
            pytest.skip("not running as root")
        if mode == "user" and os.geteuid() == 0:
            if not shutil.which("runuser") or not Path(USER_PYTHON).is_file():
                pytest.skip(f"runuser or {USER_PYTHON} missing: cannot run as {USER}")
            probe_run = subprocess.run(
                ["runuser", "-u", USER, "--", USER_PYTHON, "-c", "import os"], capture_output=True
            )
            if probe_run.returncode != 0:
                pytest.skip(f"{USER} cannot run {USER_PYTHON}")
        if mode == "root":
            self.layers = {layer.name: (layer.active, layer.detail) for layer in probe().layers}
        else:
            self.layers = {name: tuple(value) for name, value in self._as_user(["check"]).items()}

    def _as_user(self, args: list[str]) -> dict:
        python = USER_PYTHON if os.geteuid() == 0 else sys.executable
        prefix = ["runuser", "-u", USER, "--"] if os.geteuid() == 0 else []
        argv = [*prefix, "env", f"PYTHONPATH={SRC}", python, "-c", USER_DRIVER, *args]
        done = subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def run(self, code: str, *, timeout: float = 10, max_processes: int = 32) -> dict:
        """Run ``code`` under eval's limits (except those given); the result as a dict."""
        limits = dataclasses.replace(
            eval_limits(EVAL.exec_timeout, EVAL.exec_memory_mb, EVAL.exec_max_processes),
            wall_seconds=timeout,
            cpu_seconds=int(timeout),
            max_processes=max_processes,
        )
        code = textwrap.dedent(code)
        if self.mode == "root":
            result = dataclasses.asdict(run_sandboxed(PY, {"main.py": code}, limits=limits))
        else:
            folder = _world_dir()
            try:
                path = folder / "main.py"
                path.write_text(code, encoding="utf-8")
                path.chmod(0o644)
                result = self._as_user(["run", str(path), json.dumps(dataclasses.asdict(limits))])
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        assert result["status"] != "error", result["stderr"]
        return result


RUNNERS: dict[str, Runner] = {}


@pytest.fixture(params=["root", "user"])
def sandbox(request) -> Runner:
    if request.param not in RUNNERS:
        RUNNERS[request.param] = Runner(request.param)
    return RUNNERS[request.param]


def alive(marker: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if marker in line and "ps -eo" not in line]


def test_host_unix_sockets_are_unreachable(sandbox):
    _skip_unless(sandbox.layers, "mount", "network")
    folder = _world_dir()
    path = str(folder / "agent.sock")
    name = f"\0codetune-test-{uuid.uuid4().hex}"
    listeners = []
    for address in (path, name):
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(address)
        listener.listen(4)
        listeners.append(listener)
    os.chmod(path, 0o777)  # only the sandbox, not permissions, may keep the code out
    client = f"""
        import socket
        for address in [{path!r}, {name!r}]:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(address)
                print("connected", repr(address))
            except OSError as error:
                print("refused", type(error).__name__)
    """
    try:
        control = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(client)], capture_output=True, text=True
        )
        assert control.stdout.count("connected") == 2  # the client works outside the sandbox
        result = sandbox.run(client)
        assert result["stdout"].count("refused") == 2, result
        assert "connected" not in result["stdout"]
    finally:
        for listener in listeners:
            listener.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_host_files_are_invisible(sandbox):
    _skip_unless(sandbox.layers, "mount")
    folder = _world_dir()
    readable = folder / "secret.txt"
    readable.write_text("host secret")
    readable.chmod(0o644)
    secrets = [str(readable), "/etc/shadow"]
    under_root = Path("/root") / f"codetune-test-{uuid.uuid4().hex}"
    if os.geteuid() == 0:
        under_root.write_text("root secret")
        secrets.append(str(under_root))
    code = f"""
        import os
        for path in {secrets!r}:
            try:
                print("READ", path, open(path).read())
            except OSError as error:
                print("hidden", path, type(error).__name__)
        for path in ["/run", "/var/run", "/home", "/etc/shadow", "/etc/gshadow", {str(folder)!r}]:
            print("exists" if os.path.lexists(path) else "absent", path)
        print("root holds", sorted(os.listdir("/root")) if os.path.isdir("/root") else [])
        print("tmp holds", sorted(os.listdir("/tmp")))
    """
    try:
        result = sandbox.run(code)
        out = result["stdout"]
        assert "READ" not in out and out.count("hidden") == len(secrets), out
        assert "exists" not in out, out
        assert out.split("root holds ", 1)[1].split("\n")[0] in ("[]", "['.pyenv']")  # only an interpreter
        tmp_entries = out.split("tmp holds", 1)[1]
        assert "codetune-sandbox-test-" not in tmp_entries  # the host /tmp is not there
    finally:
        under_root.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_proc_shows_only_the_sandbox(sandbox):
    _skip_unless(sandbox.layers, "pid", "mount")
    host_pids = [p for p in os.listdir("/proc") if p.isdigit()]
    assert len(host_pids) > 5
    result = sandbox.run("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n")
    pids = json.loads(result["stdout"])
    assert pids == [1], pids


def test_disk_flood_stops_at_the_tmpfs_bound(sandbox):
    _skip_unless(sandbox.layers, "mount")
    code = """
        import os
        written = 0
        chunk = b"x" * (1 << 20)
        try:
            for i in range(64):
                with open(f"flood{i}", "wb") as f:
                    for _ in range(16):
                        f.write(chunk)
                        written += len(chunk)
        except OSError as error:
            print("stopped", os.strerror(error.errno))
        print(written // (1 << 20))
    """
    result = sandbox.run(code, timeout=20)
    lines = result["stdout"].split("\n")
    assert lines[0] == "stopped No space left on device", result
    written_mb = int(lines[1])
    assert written_mb <= SandboxLimits().disk_mb  # not the 1 GB it asked for


@pytest.mark.timeout(90)
def test_fork_bomb_is_contained(sandbox):
    _skip_unless(sandbox.layers, "pid")
    if sandbox.mode == "root":
        # as root the code runs as a uid of its own, so RLIMIT_NPROC (and the pids cgroup) apply
        _skip_unless(sandbox.layers, "mount")
    marker = uuid.uuid4().hex
    code = f"""
        import os, time  # {marker}
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
    """
    result = sandbox.run(code, timeout=2, max_processes=16)
    assert not result["passed"]
    assert alive(marker) == []  # every descendant died with the run
    assert sandbox.run("print('host still forks')")["passed"]
    counter = """
        import os, time
        ok = 0
        for _ in range(60):
            try:
                if os.fork() == 0:
                    time.sleep(2)
                    os._exit(0)
                ok += 1
            except OSError:
                break
        print(ok)
    """
    forked = int(sandbox.run(counter, timeout=5, max_processes=16)["stdout"].split()[0])
    assert 8 <= forked <= 20


def test_daemon_does_not_outlive_the_run(sandbox):
    _skip_unless(sandbox.layers, "pid")
    marker = uuid.uuid4().hex
    code = f"""
        import os, subprocess, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                subprocess.Popen([sys.executable, "-c", "import time  # {marker}\\nwhile True: time.sleep(1)"], start_new_session=True)
            os._exit(0)
        import time
        time.sleep(1.5)
        print("parent exits")
    """
    result = sandbox.run(code)
    assert result["passed"] and "parent exits" in result["stdout"]
    assert alive(marker) == []


def test_network_connection_fails(sandbox):
    _skip_unless(sandbox.layers, "network")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        code = (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')\n"
        )
        result = sandbox.run(code)
        assert not result["passed"] and "connected" not in result["stdout"]
    finally:
        server.close()


def test_seccomp_refuses_namespace_syscalls(sandbox):
    _skip_unless(sandbox.layers, "seccomp")
    code = """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        print(libc.unshare(0x10000000), os.strerror(ctypes.get_errno()))  # CLONE_NEWUSER
    """
    result = sandbox.run(code)
    assert result["stdout"].strip() == "-1 Operation not permitted", result


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a host mount needs root")
def test_mounts_with_odd_paths_are_not_reachable():
    runner = Runner("root")
    _skip_unless(runner.layers, "mount")
    folder = _world_dir()
    odd = folder / "with space\\and backslash"
    odd.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "codetune-odd", str(odd)], check=True)
    try:
        odd.chmod(0o777)
        code = f"""
            path = {str(odd / "escaped.txt")!r}
            try:
                open(path, "w").write("x")
                print("WROTE")
            except OSError as error:
                print("blocked", type(error).__name__)
            mounts = open("/proc/self/mountinfo").read().splitlines()
            # mountinfo octal-escapes space, tab, newline and backslash
            decode = lambda s: s.encode().decode("unicode_escape")
            writable = [decode(m.split()[4]) for m in mounts if m.split()[5].split(",")[0] == "rw"]
            print("writable", writable)
        """
        result = runner.run(code)
        assert "blocked" in result["stdout"] and not (odd / "escaped.txt").exists()
        writable = result["stdout"].split("writable", 1)[1]
        allowed = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/shm"}
        paths = eval(writable)  # a Python list literal printed by the program
        assert [p for p in paths if p not in allowed and not p.endswith("/work")] == []
    finally:
        subprocess.run(["umount", str(odd)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def test_write_outside_the_temp_dir_is_blocked(sandbox):
    folder = _world_dir()
    folder.chmod(0o777)
    target = folder / "escaped.txt"
    try:
        result = sandbox.run(f"open({str(target)!r}, 'w').write('x')\n")
        assert not result["passed"] and not target.exists()
        result = sandbox.run(
            "import subprocess\nsubprocess.run(['mount', '-o', 'remount,rw', '/'], check=True)\n"
        )
        assert not result["passed"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@needs_ns
@pytest.mark.parametrize(
    ("command", "code"),
    [
        (["bash", "{file}"], "echo ran; cat /etc/shadow || echo hidden"),
        (
            ["node", "{file}"],
            "console.log('ran'); try { require('fs').readFileSync('/etc/shadow') } catch (e) { console.log('hidden') }",
        ),
    ],
    ids=["bash", "node"],
)
def test_other_interpreters_run_and_see_nothing(command, code):
    if not shutil.which(command[0]):
        pytest.skip(f"{command[0]} not installed")
    result = run_sandboxed(command, {"main": code})
    assert result.stdout.split() == ["ran", "hidden"], (result.stdout, result.stderr)


def run(code: str, **limits) -> object:
    return run_sandboxed(PY, {"main.py": code}, limits=SandboxLimits(**limits))


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
def test_memory_hog_fails():
    result = run("x = bytearray(4 * 1024**3)\nprint('allocated')", memory_mb=256)
    assert not result.passed and "allocated" not in result.stdout


@needs_ns
def test_output_is_capped():
    result = run("print('x' * 10**6)", output_bytes=1000)
    assert len(result.stdout) < 1100 and result.stdout.endswith("[output truncated]")


@pytest.mark.parametrize("layer", ["network", "mount", "pid"])
def test_refuses_without_a_required_layer(monkeypatch, layer):
    import dataclasses

    from codetune.errors import CodetuneError
    from codetune.evaluate import sandbox

    real = sandbox.probe()
    layers = tuple(
        dataclasses.replace(item, active=False, detail="not permitted here") if item.name == layer else item
        for item in real.layers
    )
    monkeypatch.setattr(sandbox, "probe", lambda: dataclasses.replace(real, layers=layers))
    with pytest.raises(CodetuneError, match=f"--unsafe-{layer}"):
        sandbox.run_sandboxed(PY, {"main.py": "print(1)"})
    if not real.missing():
        assert sandbox.run_sandboxed(PY, {"main.py": "print(1)"}, unsafe=[layer]).passed


@needs_ns
def test_cli_check_and_run_json(tmp_path):
    """`codetune sandbox check` names every layer; `sandbox run FILE --json` contains a hostile file."""
    env = {**os.environ, "PYTHONPATH": SRC}
    check = subprocess.run(
        [sys.executable, "-m", "codetune", "sandbox", "check", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    layers = json.loads(check.stdout)["layers"]
    assert set(layers) == {"network", "mount", "pid", "user", "cgroups", "seccomp", "limits"}
    program = tmp_path / "main.py"
    program.write_text(
        "import os\nprint(os.path.exists('/etc/shadow'), sum(p.isdigit() for p in os.listdir('/proc')))\n"
    )
    argv = [sys.executable, "-m", "codetune", "sandbox", "run", str(program), "--json"]
    done = subprocess.run([*argv, "--set", "exec_timeout=5"], capture_output=True, text=True, env=env)
    result = json.loads(done.stdout)
    assert done.returncode == 0 and result["passed"] and result["stdout"] == "False 1\n", result
    assert {"network", "mount", "pid", "limits"} <= set(result["isolation"])
    program.write_text("raise SystemExit(3)\n")
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert done.returncode == 1 and json.loads(done.stdout)["returncode"] == 3


def test_eval_refuses_and_names_the_flag(monkeypatch, tmp_path):
    """`codetune sandbox run` (eval's path) prints one error line naming --unsafe-LAYER, exit 2."""
    program = tmp_path / "main.py"
    program.write_text("print(1)\n")
    env = {**os.environ, "PYTHONPATH": SRC, "PATH": str(tmp_path)}  # no unshare on PATH
    (tmp_path / "prlimit").symlink_to(shutil.which("prlimit") or "/usr/bin/prlimit")
    done = subprocess.run(
        [sys.executable, "-m", "codetune", "sandbox", "run", str(program)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "--unsafe-network" in done.stderr
    assert "Traceback" not in done.stderr


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
